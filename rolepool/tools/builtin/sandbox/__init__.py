"""`run_python`'s sandbox: the runner (`runner`), the child's bootstrap (`child`), the kernel
calls it makes (`confine`), root's throwaway uids (`uids`) and what a run did (`result`).
docs/sandbox.md says what is enforced and the test behind each promise."""

from rolepool.tools.builtin.sandbox.result import SandboxLimits, SandboxResult
from rolepool.tools.builtin.sandbox.runner import run_python, run_sandboxed

__all__ = ["SandboxLimits", "SandboxResult", "run_python", "run_sandboxed"]
