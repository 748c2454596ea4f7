"""Tenants of `rolepool serve`: who holds which API key, with which quotas and priority.

The keys file (`rolepool serve --keys FILE`) is TOML, one `[[tenant]]` table per tenant:

    [[tenant]]
    name = "evals"
    key_sha256 = "9f86d08..."      # printf %s "$KEY" | sha256sum
    priority = "batch"             # or "interactive" (the default)
    weight = 2                     # share where requests wait (default: the pool's, else 1)
    admin = false                  # true: sees every tenant's metrics
    [tenant.quota]
    requests_per_minute = 120
    tokens_per_minute = 200000
    concurrent_requests = 16
    tokens_per_day = 5000000

Only the SHA-256 of a key is stored: API keys are long random secrets, so an unsalted hash is
as good as a password hash for them and lets the server check one in constant time. A key is
identified by hashing it and comparing the digest with every tenant's (`hmac.compare_digest`,
no early exit), so the time taken says nothing about which tenant, if any, holds it.
`TenantKeys.reload` rereads the file (on SIGHUP in `rolepool serve`); a deleted tenant's key
stops working at once, and changed quotas and weights apply from the next request.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import tomllib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from rolepool.core import ConfigError
from rolepool.core.requests import Priority
from rolepool.pools.admission import TenantWeight
from rolepool.pools.quotas import TenantQuota

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def hash_key(key: str | bytes) -> str:
    """The hex SHA-256 of an API key, as the keys file stores it."""
    data = key.encode() if isinstance(key, str) else key
    return hashlib.sha256(data).hexdigest()


class Tenant(BaseModel):
    """One `[[tenant]]` table."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    key_sha256: str
    priority: Priority = "interactive"
    weight: TenantWeight = 1.0
    """Its share where requests wait, against the other tenants' (`admission.py`). Left out,
    the pool's own weight for the tenant applies (pool.toml's `[tenant_weights]`), else 1."""
    admin: bool = False
    quota: TenantQuota = Field(default_factory=TenantQuota)

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if not _NAME.match(value):  # it becomes a Prometheus label and a store column
            raise ValueError("letters, digits, '_', '.', '-' only, at most 64")
        return value

    @field_validator("key_sha256")
    @classmethod
    def _hex_digest(cls, value: str) -> str:
        if not _HEX64.match(value.lower()):
            raise ValueError("must be 64 hex digits (the SHA-256 of the key, not the key)")
        return value.lower()


class _KeysFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tenant: list[Tenant] = Field(default_factory=list)


class TenantKeys:
    """The tenants of a keys file; `identify` turns an Authorization header into one."""

    def __init__(self, tenants: list[Tenant], *, path: Path | None = None) -> None:
        _check_unique(tenants)
        self.path = path
        self._tenants = list(tenants)
        self._digests = [bytes.fromhex(t.key_sha256) for t in tenants]

    @classmethod
    def load(cls, path: str | Path) -> TenantKeys:
        path = Path(path)
        return cls(_read(path), path=path)

    def reload(self) -> None:
        """Reread the file; on a bad file the old tenants stay and the error is raised."""
        if self.path is None:
            return
        tenants = _read(self.path)
        _check_unique(tenants)
        self._tenants, self._digests = tenants, [bytes.fromhex(t.key_sha256) for t in tenants]

    @property
    def tenants(self) -> dict[str, Tenant]:
        return {t.name: t for t in self._tenants}

    @property
    def weights(self) -> dict[str, float]:
        """The weights the file sets, by tenant; a tenant without `weight` is not listed."""
        return {t.name: t.weight for t in self._tenants if "weight" in t.model_fields_set}

    def identify(self, authorization: bytes) -> Tenant | None:
        """The tenant whose key is the bearer token in `authorization`, or None."""
        scheme, _, token = authorization.partition(b" ")
        digest = hashlib.sha256(token.strip()).digest()
        valid = scheme.lower() == b"bearer" and bool(token.strip())
        found: Tenant | None = None
        tenants, digests = self._tenants, self._digests  # one snapshot across a reload
        for tenant, expected in zip(tenants, digests, strict=True):
            if hmac.compare_digest(digest, expected):  # every tenant compared: no early exit
                found = tenant
        return found if valid else None


def _read(path: Path) -> list[Tenant]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        message = f"cannot read the keys file: {exc.strerror or exc}"
        raise ConfigError(message, where=str(path)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", where=str(path)) from None
    try:
        return _KeysFile.model_validate(data).tenant
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ConfigError(first["msg"], where=f"{path}: {_key_path(data, first['loc'])}") from None


def _key_path(data: dict, loc: tuple) -> str:
    """`tenant[1] ('evals').weight`: which table, and which tenant when it has a name."""
    where = ".".join(str(p) for p in loc)
    if len(loc) < 2 or loc[0] != "tenant" or not isinstance(loc[1], int):
        return where
    table = data["tenant"][loc[1]] if isinstance(data.get("tenant"), list) else None
    name = table.get("name") if isinstance(table, dict) else None
    named = f" ({name!r})" if isinstance(name, str) else ""
    rest = "".join(f".{p}" for p in loc[2:])
    return f"tenant[{loc[1]}]{named}{rest}"


def _check_unique(tenants: list[Tenant]) -> None:
    names = [t.name for t in tenants]
    keys = [t.key_sha256 for t in tenants]
    if len(set(names)) != len(names):
        raise ConfigError("two tenants have the same name", where="keys file")
    if len(set(keys)) != len(keys):
        raise ConfigError("two tenants have the same key", where="keys file")
