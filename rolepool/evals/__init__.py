"""Evals: run suites of tool-calling cases through the real agent loop and score every call.

`cases` holds the value types (a `Case`, what a model produced for it as a `Prediction`), `suites`
loads suites (our JSONL format, the built-in `roles` suite from the zoo's held-out splits, BFCL v4
categories via `bfcl`), `scoring` turns one case and one prediction into per-case scores and
`replay` turns precomputed outputs into predictions without any model.
"""
