"""The chat template the zoo's tokenizers carry, so `tokenizer.apply_chat_template(messages,
tools=...)` renders exactly what the models were trained on.

Tools are rendered compactly from their JSON Schemas: `assign(role:coder|search|writer,task:str)`,
`run_python(code:str,timeout_s:int[1..60]=10)`. Assistant tool calls are Hermes blocks,
`<tool_call>{"name": ..., "arguments": {...}}</tool_call>`, with arguments given as a dict or as a
JSON string (an OpenAI-shaped history); each assistant turn ends with `<|end|>`, the EOS token.
`{% generation %}` marks the assistant spans for `return_assistant_tokens_mask`.
"""

from __future__ import annotations

SYSTEM, USER, ASSISTANT, TOOL, END, PAD = (
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|tool|>",
    "<|end|>",
    "<|pad|>",
)
CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"
SPECIAL_TOKENS = [PAD, END, SYSTEM, USER, ASSISTANT, TOOL]

CHAT_TEMPLATE = r"""
{%- macro param(name, p, required) -%}
{{- name }}:
{%- if p.enum is defined -%}{{ p.enum | join('|') }}
{%- elif p.type == 'integer' -%}int
{%- elif p.type == 'string' -%}str
{%- elif p.type == 'number' -%}float
{%- elif p.type == 'boolean' -%}bool
{%- elif p.type is defined -%}{{ p.type }}
{%- else -%}any
{%- endif -%}
{%- if p.minimum is defined or p.maximum is defined -%}
[{{ p.minimum if p.minimum is defined else '' }}..{{ p.maximum if p.maximum is defined else '' }}]
{%- endif -%}
{%- if p.default is defined -%}={{ p.default | tojson }}
{%- elif not required -%}?
{%- endif -%}
{%- endmacro -%}
{%- macro signature(t) -%}
{%- set f = t.function if t.function is defined else t -%}
{%- set schema = f.parameters if f.parameters is defined and f.parameters else {} -%}
{%- set props = schema.properties if schema.properties is defined else {} -%}
{%- set req = schema.required if schema.required is defined else [] -%}
{{- f.name }}(
{%- for name, p in props.items() -%}
{{ param(name, p, name in req) }}{{ ',' if not loop.last else '' }}
{%- endfor -%}
)
{%- endmacro -%}
{%- set has_system = messages | length > 0 and messages[0].role == 'system' -%}
{%- if has_system or tools -%}
<|system|>{{ messages[0].content if has_system else '' }}
{%- if tools -%}
{{ '\n' }}Tools: {% for t in tools -%}
{{ signature(t) }}{{ ';' if not loop.last else '' }}
{%- endfor %}
{%- endif -%}
{%- endif -%}
{%- for m in messages -%}
{%- if loop.first and has_system -%}
{%- elif m.role == 'assistant' -%}
<|assistant|>{% generation %}{{ m.content if m.content else '' }}
{%- for c in (m.tool_calls or []) -%}
{%- set f = c.function if c.function is defined else c -%}
{%- set args = f.arguments if f.arguments is string else (f.arguments or {}) | tojson -%}
<tool_call>{"name": {{ f.name | tojson }}, "arguments": {{ args }}}</tool_call>
{%- endfor -%}
<|end|>{% endgeneration %}
{%- elif m.role == 'tool' -%}
<|tool|>{{ m.content }}
{%- elif m.role == 'user' -%}
<|user|>{{ m.content }}
{%- elif m.role == 'system' -%}
<|system|>{{ m.content }}
{%- else -%}
{{ raise_exception('unknown message role: ' + m.role) }}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}<|assistant|>{%- endif -%}
""".strip()
