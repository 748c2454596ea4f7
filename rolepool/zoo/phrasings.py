"""Request templates and word pools for the corpus. Each list is `(train, held_out)`: held-out
templates only appear in the `unseen_phrasings` split, so that split measures whether a model
understood the request rather than recognised its wording."""

from __future__ import annotations

Templates = tuple[tuple[str, ...], tuple[str, ...]]

# Corpus v2: train-only frames around an imperative request ("{core}"): politeness, questions,
# context. They are composed with each tool's cores (`compose`), so a request's wording varies far
# more than a fixed template list lets it; the held-out templates stay as they were, so
# `unseen_phrasings` still measures wording the models never saw.
FRAMES: tuple[str, ...] = (
    "{core}.",
    "Please {core}.",
    "Could you {core}?",
    "Can you {core}?",
    "Would you {core}?",
    "I'd like you to {core}.",
    "I need you to {core}.",
    "Go ahead and {core}.",
    "Next, {core}.",
    "Your job: {core}.",
    "Now {core}.",
    "Kindly {core}.",
    "{core}, please.",
    "{core} for me.",
    "One more thing: {core}.",
    "First {core}.",
    "We should {core}.",
    "Help me out and {core}.",
    "It would be great if you could {core}.",
)


def compose(cores: tuple[str, ...], frames: tuple[str, ...] = FRAMES) -> tuple[str, ...]:
    """Every frame around every core, capitalised where the sentence starts with a word."""
    out = []
    for frame in frames:
        for core in cores:
            text = frame.format(core=core) if "{core}" in frame else frame
            # Keep a value's braces intact: only a leading letter of the template is raised.
            out.append(text[0].upper() + text[1:] if text[0].isalpha() else text)
    return tuple(dict.fromkeys(out))


EXTRA_TRAIN: dict[str, tuple[str, ...]] = {}
"""Corpus v2's train-only templates, by the name of the template list they add to (`assign`,
`parallel_leads`, ..., a tool's name). Only the `train` split of a v2 corpus draws from them:
`unseen_values` keeps the v1 train templates (every checkpoint trained on those, so its scores
compare across corpus versions) and `unseen_phrasings` its held-out ones."""


def _extra(name: str, held_out: tuple[str, ...], templates: tuple[str, ...]) -> None:
    EXTRA_TRAIN[name] = tuple(t for t in dict.fromkeys(templates) if t not in held_out)


ROLE_NAMES: dict[str, Templates] = {
    "coder": (("coder", "developer", "programmer", "code agent"), ("engineer",)),
    "search": (("search agent", "researcher", "search role"), ("search specialist",)),
    "writer": (("writer", "author", "writing agent"), ("editor",)),
}

ASSIGN: Templates = (
    (
        "Ask the {role} to {task}.",
        "Have the {role} {task}.",
        "Get the {role} on this: {task}.",
        "I need the {role} to {task}.",
        "Delegate to the {role}: {task}.",
        "Send this task to the {role}: {task}.",
        "Can the {role} {task}?",
        "Please assign the {role} to {task}.",
    ),
    (
        "Let the {role} take care of this: {task}.",
        "The {role} should {task}.",
        "Hand this to the {role}: {task}.",
    ),
)

_extra(
    "assign",
    ASSIGN[1],
    compose(
        (
            "ask the {role} to {task}",
            "have the {role} {task}",
            "get the {role} to {task}",
            "tell the {role} to {task}",
            "assign the {role} to {task}",
            "give the {role} this task: {task}",
            "send the {role} off to {task}",
        )
    )
    + (
        "{Role}: {task}.",
        "{Role}, please {task}.",
        "Task for the {role}: {task}.",
        "For the {role}: {task}.",
        "This one is for the {role}: {task}.",
        "The {role} needs to {task}.",
        "Assign to the {role}: {task}.",
        "I want the {role} to {task}.",
        "The {role} has to {task}.",
        "Could someone on the {role} side {task}?",
        "Who can {task}? The {role}.",
        "Job for the {role}: {task}.",
    ),
)

PARALLEL_LEADS: Templates = (
    ("Plan this: ", "Do these in parallel: ", "Several steps: ", "At the same time, ", ""),
    ("Split the work: ", "In one go, "),
)
_extra(
    "parallel_leads",
    PARALLEL_LEADS[1],
    ("Two jobs: ", "Please do both: ", "Several things: ", "Together: ", "All at once: "),
)
PARALLEL_PARTS: Templates = (
    (
        "have the {role} {task}",
        "ask the {role} to {task}",
        "get the {role} to {task}",
        "the {role} must {task}",
    ),
    ("let the {role} {task}", "the {role} can {task}"),
)
_extra(
    "parallel_parts",
    PARALLEL_PARTS[1],
    ("tell the {role} to {task}", "the {role} should go and {task}", "{role}: {task}"),
)
PARALLEL_JOINS: Templates = (
    ("; ", ", and ", " and ", ", then in parallel "),
    ("; also ", ", plus "),
)
_extra("parallel_joins", PARALLEL_JOINS[1], (". Also ", ", while ", "; and ", ". Next, "))

TOOL_REQUESTS: dict[str, Templates] = {
    "run_python": (
        (
            "Run this Python: {code}",
            "Execute `{code}` please.",
            "Run the code {code} and tell me the output.",
            "What does {code} print? Run it.",
            "Use python to run: {code}",
            "Please execute this snippet: {code}",
            "Run {code} with a timeout of {timeout_s} seconds.",
            "Execute `{code}`, timeout {timeout_s}s.",
            "Run this with a {timeout_s} second limit: {code}",
        ),
        (
            "Could you evaluate {code} in Python?",
            "Try running {code} for me.",
            "Give {code} at most {timeout_s} seconds and run it.",
        ),
    ),
    "read_file": (
        (
            "Read the file {path}.",
            "Show me what is in {path}.",
            "Open {path} and read it.",
            "What does {path} contain?",
            "Read {path} from the workspace.",
            "Load the contents of {path}.",
        ),
        ("Cat {path} for me.", "I want to see the file {path}."),
    ),
    "write_file": (
        (
            "Save the text '{content}' in {path}.",
            "Create {path} containing: {content}",
            "Put '{content}' into the file {path}.",
            "Write a file {path} with the text {content}.",
            "Store {content} in {path}.",
            "Make a file at {path} that says {content}.",
        ),
        ("Overwrite {path} so it reads {content}.", "Dump '{content}' to {path}."),
    ),
    "search_docs": (
        (
            "Search the docs for {query}.",
            "Find documents about {query}.",
            "Look up {query} in the docs.",
            "Search for {query}, top {top_k} results.",
            "Find the {top_k} best docs on {query}.",
            "What do the docs say about {query}?",
            "Search {query} and return {top_k} hits.",
            "Query the collection for {query}.",
        ),
        (
            "Dig through the documentation for {query}.",
            "I need {top_k} results about {query}.",
            "Any docs mentioning {query}?",
        ),
    ),
    "read_doc": (
        (
            "Read document {doc_id}.",
            "Open doc {doc_id}.",
            "Show me the document with id {doc_id}.",
            "Fetch {doc_id} from the collection.",
            "What does {doc_id} say?",
            "Read the doc {doc_id} please.",
        ),
        ("Pull up {doc_id}.", "Give me the full text of {doc_id}."),
    ),
    "write_section": (
        (
            "Write a section titled {title} saying {body}.",
            "Add a section '{title}' with the text: {body}",
            "Append a section called {title}: {body}",
            "New section, title {title}, body: {body}",
            "Add to the report a section named {title} that reads {body}.",
        ),
        (
            "Put a section {title} in the report. It should say: {body}",
            "Section '{title}', content: {body}",
        ),
    ),
}

_TOOL_CORES: dict[str, tuple[str, ...]] = {
    "run_python": (
        "run {code}",
        "execute {code}",
        "run the Python code {code}",
        "run `{code}` and show the output",
        "execute the snippet `{code}`",
        "run {code} with a {timeout_s} second timeout",
        "execute {code}, limit {timeout_s} seconds",
        "run {code} but stop after {timeout_s} seconds",
    ),
    "read_file": (
        "read {path}",
        "open the file {path}",
        "show me {path}",
        "read the contents of {path}",
        "get the text of the file {path}",
        "look inside {path}",
    ),
    "write_file": (
        "write '{content}' to {path}",
        "save {content} into {path}",
        "create the file {path} with the text {content}",
        "put the text '{content}' in {path}",
        "write the file {path} containing {content}",
        "store '{content}' as {path}",
    ),
    "search_docs": (
        "search the docs for {query}",
        "find docs about {query}",
        "look up {query}",
        "search for {query}",
        "find {top_k} documents on {query}",
        "search the collection for {query}, {top_k} results",
        "look for documents about {query} and return {top_k}",
        "find material on {query}",
    ),
    "read_doc": (
        "read {doc_id}",
        "open the document {doc_id}",
        "show the doc {doc_id}",
        "fetch the document {doc_id}",
        "read the document called {doc_id}",
    ),
    "write_section": (
        "write a section {title} that says {body}",
        "add a section titled {title}: {body}",
        "append the section '{title}' with the text {body}",
        "add a section named {title} saying {body}",
        "write the section {title} with this text: {body}",
    ),
}
for _tool, _templates in TOOL_REQUESTS.items():
    _extra(_tool, _templates[1], compose(_TOOL_CORES[_tool]))

GREETINGS: Templates = (
    ("Hi!", "Hello there.", "Good morning!", "Hey, who are you?", "Hello, what can you do?"),
    ("Yo!", "Greetings."),
)
OUT_OF_SCOPE: Templates = (
    (
        "What's the weather like today?",
        "Tell me a joke.",
        "Can you order me a pizza?",
        "Book a flight to Paris.",
        "What time is it?",
        "Play some music.",
        "Translate hello into German.",
        "Turn off the lights.",
    ),
    ("Call my mom.", "Who won the game last night?", "Send an email to my boss."),
)
PREFIXES = ("Hey, ", "Please: ", "Quick one: ", "OK. ", "Hi! ")
SUFFIXES = (" Thanks!", " ASAP.", " Thank you.", " Cheers.")

TASK_VERBS = (
    "fix",
    "check",
    "review",
    "test",
    "summarise",
    "explain",
    "draft",
    "find",
    "compare",
    "update",
    "clean up",
    "document",
    "profile",
    "rename",
    "list",
)
REAL_WORDS = (
    "parser",
    "cache",
    "report",
    "budget",
    "schema",
    "login",
    "river",
    "garden",
    "window",
    "engine",
    "invoice",
    "planet",
    "ticket",
    "module",
    "sensor",
    "market",
    "kernel",
    "lesson",
    "harbor",
    "signal",
    "folder",
    "battery",
    "history",
    "pattern",
    "village",
    "network",
    "painting",
    "recipe",
    "server",
    "bridge",
    "rocket",
    "forest",
    "camera",
    "winter",
    "summary",
    "library",
    "protocol",
    "token",
    "vector",
    "matrix",
    "storage",
    "thread",
    "socket",
    "queue",
    "meeting",
    "contract",
    "pricing",
    "travel",
    "weather",
    "music",
    "office",
    "doctor",
    "insect",
    "mirror",
    "circle",
    "orange",
    "silver",
    "shadow",
    "velvet",
    "candle",
    "ladder",
    "pocket",
    "button",
    "marble",
    "anchor",
    "canvas",
    "copper",
    "dragon",
    "falcon",
    "glacier",
    "harvest",
    "island",
    "jungle",
    "lantern",
    "meadow",
    "nickel",
    "oyster",
    "pepper",
    "quartz",
    "saddle",
    "timber",
    "valley",
    "walnut",
    "yogurt",
    "zipper",
    "compiler",
    "dataset",
    "upload",
    "checkout",
    "payment",
    "release",
    "backup",
    "monitor",
    "router",
    "license",
    "profile",
    "journal",
    "festival",
)
ONSETS = (
    "b",
    "br",
    "c",
    "ch",
    "d",
    "dr",
    "f",
    "fl",
    "g",
    "gr",
    "h",
    "j",
    "k",
    "kl",
    "l",
    "m",
    "n",
    "p",
    "pl",
    "qu",
    "r",
    "s",
    "sh",
    "st",
    "t",
    "tr",
    "v",
    "w",
    "z",
    "sn",
)
VOWELS = ("a", "e", "i", "o", "u", "ai", "ea", "oo", "ou", "ie", "y")
CODAS = ("", "", "", "n", "r", "s", "l", "m", "x", "ck", "nd", "st", "sh")
PATH_DIRS = ("src", "notes", "data", "docs", "lib", "tests", "app")
PATH_EXTS = ("py", "md", "txt", "csv", "json", "toml")
DOC_PREFIXES = ("doc", "kb", "faq", "spec", "note", "ref")
