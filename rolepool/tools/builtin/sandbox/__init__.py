"""`run_python`'s sandbox: the runner (`runner`), the child's bootstrap (`child`), root's
throwaway uids (`uids`). docs/sandbox.md says what is enforced and the test behind each promise."""

from rolepool.tools.builtin.sandbox.runner import (
    SandboxLimits,
    SandboxResult,
    run_python,
    run_sandboxed,
)

__all__ = ["SandboxLimits", "SandboxResult", "run_python", "run_sandboxed"]
