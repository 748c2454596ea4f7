"""Every event field says what it holds: the events are the record users and evals read."""

from __future__ import annotations

import typing

from rolepool.core import events as ev


def test_every_event_field_has_a_description():
    classes = [ev.EventBase, *typing.get_args(typing.get_args(ev.Event)[0])]
    assert len(classes) == 17
    missing = [
        f"{cls.__name__}.{name}"
        for cls in classes
        for name, field in cls.model_fields.items()
        if name != "type" and not field.description  # `type` is the union's discriminator
    ]
    assert missing == []
