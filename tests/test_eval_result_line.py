"""`results.jsonl` lines are typed (`ResultLine`) and the file format did not change: lines that
earlier versions wrote (a real eval on the shipped models before the change, and a replay) read
back and are written again as the same bytes, and new lines are written the way they were."""

from __future__ import annotations

import json

import pytest

from rolepool.core import UserError
from rolepool.evals.result_line import AttemptRecord, ResultLine
from rolepool.evals.results import ResultsFile, load_results
from rolepool.evals.scoring import Scores

# Written by `rolepool eval` at 87e26f2 (before the lines were typed): a MoE no-call case, a dense
# call with a number argument, a case the worker refused, and a replay's line (no error_kind key,
# latency the integer 0).
OLD_LINES = [
    r"""{"suite":"roles","case":"roles/unseen_values/0009","worker":"moe-s1","model":"moe-s1","architecture":"moe","role":"planner","category":"no_call","scores":{"parsed":null,"json_valid":true,"schema_valid_first_try":null,"schema_valid":null,"name_correct":null,"exact":true,"no_call_correct":true,"false_call":false},"calls":[],"attempts":[{"parse_error":null,"invalid":[],"text":"Sorry, none of my tools can do that.","calls":[]}],"error":null,"turns":1,"latency":2.0000865979999958,"wall":2.0013074990000064,"started":1796291062.0535686,"ended":1796291064.054876,"usage":{"prompt_tokens":56,"completion_tokens":11},"expert_load":[[3,2,17,50,2,2,12,44],[14,13,0,3,63,34,2,3],[57,0,46,0,0,5,11,13],[1,51,1,11,0,20,44,4]],"run_id":"run_4bcbc19f3c5e4eee9a36","error_kind":null}""",
    r"""{"suite":"roles","case":"roles/unseen_values/0014","worker":"dense-s2","model":"dense-s2","architecture":"dense","role":"coder","category":"single","scores":{"parsed":true,"json_valid":true,"schema_valid_first_try":true,"schema_valid":true,"name_correct":true,"exact":true,"no_call_correct":null,"false_call":null},"calls":[{"name":"run_python","arguments":{"code":"print(99 / 0)","timeout_s":59}}],"attempts":[{"parse_error":null,"invalid":[],"text":"<tool_call>{\"name\": \"run_python\", \"arguments\": {\"code\": \"print(99 / 0)\", \"timeout_s\": 59}}</tool_call>","calls":[{"name":"run_python","arguments":{"code":"print(99 / 0)","timeout_s":59}}]}],"error":null,"turns":1,"latency":4.627078243999961,"wall":4.635538940999993,"started":1796291061.9071932,"ended":1796291066.5427322,"usage":{"prompt_tokens":95,"completion_tokens":45},"expert_load":null,"run_id":"run_75ee8fa9047b43cfb2f2","error_kind":null}""",
    r"""{"suite":"roles","case":"roles/unseen_values/0018","worker":"dense-s1","model":"dense-s1","architecture":"dense","role":"search","category":"multi_turn","scores":{"parsed":false,"json_valid":false,"schema_valid_first_try":false,"schema_valid":false,"name_correct":false,"exact":false,"no_call_correct":null,"false_call":null},"calls":[],"attempts":[{"parse_error":"line 1, column 198 (hermes): unterminated JSON object (a closing bracket is missing) in <tool_call> block near ' trickel trickel trickel trickel trick\"}'","invalid":[],"text":"<tool_call>{\"name\": \"finish\", \"arguments\": {\"answer\": \"kb-157 says: Candle qte profile nickel trickel trickel trickel trickel trickel trickel trickel trickel trickel trickel trickel trickel trick\"}","calls":[]}],"error":"RequestRefused: worker 'dense-s1': prompt of 616 tokens does not fit the model's context of 512","turns":2,"latency":10.964182575999985,"wall":10.965897158000018,"started":1796291061.7505357,"ended":1796291072.7164328,"usage":{"prompt_tokens":404,"completion_tokens":108},"expert_load":null,"run_id":"run_dc5e44eba06f424cb737","error_kind":"refused"}""",
    r"""{"suite":"roles","case":"roles/unseen_phrasings/0002","worker":"replay-dense-s1","model":"","architecture":"unknown","role":"planner","category":"multi_turn","scores":{"parsed":true,"json_valid":true,"schema_valid_first_try":true,"schema_valid":true,"name_correct":true,"exact":true,"no_call_correct":null,"false_call":null},"calls":[{"name":"finish","arguments":{"answer":"writer: Added the section txcnyxhx uvxab traimgast."}}],"attempts":[{"parse_error":null,"invalid":[],"text":"<tool_call>{\"name\": \"finish\", \"arguments\": {\"answer\": \"writer: Added the section txcnyxhx uvxab traimgast.\"}}</tool_call>","calls":[{"name":"finish","arguments":{"answer":"writer: Added the section txcnyxhx uvxab traimgast."}}]}],"error":null,"turns":0,"latency":0,"wall":0.0,"started":null,"ended":null,"usage":{"prompt_tokens":0,"completion_tokens":0},"expert_load":null,"run_id":null}""",
]


@pytest.mark.parametrize("line", OLD_LINES, ids=["moe", "dense", "refused", "replay"])
def test_an_old_line_round_trips_byte_for_byte(line):
    record = ResultLine.model_validate(json.loads(line))
    assert record.to_json() == line


def test_old_lines_read_typed_from_a_results_file_and_resume_keeps_them(tmp_path):
    data = "".join(line + "\n" for line in OLD_LINES).encode()
    (tmp_path / "results.jsonl").write_bytes(data)
    moe, dense, refused, replay = load_results(tmp_path)
    assert moe.architecture == "moe" and len(moe.expert_load) == 4 and moe.scores.exact
    assert dense.calls[0].arguments == {"code": "print(99 / 0)", "timeout_s": 59}
    assert dense.usage.completion_tokens == 45 and dense.error_kind is None
    assert refused.error_kind == "refused" and refused.scores.exact is False
    assert replay.latency == 0 and replay.started is None and replay.run_id is None
    with ResultsFile(tmp_path) as results:
        assert results.done() == {r.key for r in (moe, dense, refused, replay)}
        results.append(ResultLine(suite="s", case="c", worker="w", scores=Scores(exact=True)))
    written = (tmp_path / "results.jsonl").read_bytes()
    assert written.startswith(data)  # appended, nothing rewritten
    assert (
        written[len(data) :] == b'{"suite":"s","case":"c","worker":"w","scores":{"exact":true}}\n'
    )


def test_a_line_keeps_keys_it_does_not_know_and_writes_text_unescaped():
    line = OLD_LINES[1].replace('"error_kind":null}', '"error_kind":null,"added_later":[1]}')
    assert ResultLine.model_validate(json.loads(line)).to_json() == line
    record = ResultLine(
        suite="s", case="c", worker="w", scores=Scores(), attempts=[AttemptRecord(text="façade ✓")]
    )
    assert '"text":"façade ✓"' in record.to_json()


def test_a_line_of_the_wrong_shape_is_an_error_naming_it(tmp_path):
    bad = OLD_LINES[0].replace('"turns":1', '"turns":"one"')
    (tmp_path / "results.jsonl").write_text(OLD_LINES[1] + "\n" + bad + "\n")
    with pytest.raises(UserError, match=r"results\.jsonl:2: not an eval result \(turns: "):
        load_results(tmp_path)
