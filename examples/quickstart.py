"""Quick start: a tool, an agent, a run whose events are printed live and stored on disk.

The worker here is scripted so the example runs anywhere in a second; swap in any `Worker`
(a transformers model, an OpenAI-compatible server) and nothing else changes.
"""

import anyio

from rolepool import Agent, ScriptedWorker, tool


@tool
def word_count(text: str) -> int:
    """Count the words in a text.

    Args:
        text: the text to count
    """
    return len(text.split())


worker = ScriptedWorker(
    [
        '<tool_call>{"name": "word_count", "arguments": {"text": "to be or not to be"}}'
        "</tool_call>",
        # breaks the schema: fed back to the model, never run
        '{"name": "word_count", "arguments": {"text": 42}}',
        "The phrase has 6 words.",
    ]
)
agent = Agent(
    "counter",
    role="writer",
    instructions="Answer with the help of tools.",
    tools=[word_count],
    max_retries=2,
)


async def main() -> None:
    async with agent.start("How many words are in 'to be or not to be'?", worker=worker) as run:
        async for event in run.events():
            print(f"{event.seq:2d} {event.type}")
        result = await run.result()
    print("answer:", result.output)
    print(f"trace:  rolepool trace show {result.run_id}")


anyio.run(main)
