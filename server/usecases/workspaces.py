"""Workspaces and API keys: creating them and authenticating calls."""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass

from cachetools import TTLCache

from server.domain.api_keys import ApiKeyMode, generate_api_key, hash_api_key, is_well_formed, key_prefix
from server.domain.errors import ApiKeyInvalid, ApiKeyMissing
from server.domain.validation import Violations, check_text
from server.usecases.ports import Clock, Workspace, WorkspaceStore

MAX_WORKSPACE_NAME_LENGTH = 100


@dataclass(frozen=True, slots=True)
class IssuedApiKey:
    """A new key in plain text. It is shown once and only its hash is stored."""

    workspace: Workspace
    api_key: str


class WorkspaceAdmin:
    """Operator actions on workspaces, used by the command line."""

    def __init__(self, workspaces: WorkspaceStore, clock: Clock) -> None:
        self._workspaces = workspaces
        self._clock = clock

    def create_workspace(self, name: str, mode: ApiKeyMode) -> IssuedApiKey:
        violations = Violations()
        check_text(violations, "name", name, max_length=MAX_WORKSPACE_NAME_LENGTH, required=True)
        violations.raise_if_any()

        workspace = self._workspaces.add_workspace(name, self._clock())
        return self._issue(workspace, mode)

    def issue_api_key(self, workspace_name: str, mode: ApiKeyMode) -> IssuedApiKey | None:
        """Add a key to an existing workspace; None when no workspace has that name."""
        workspace = self._workspaces.find_workspace_by_name(workspace_name)
        if workspace is None:
            return None
        return self._issue(workspace, mode)

    def find_workspace(self, name: str) -> Workspace | None:
        return self._workspaces.find_workspace_by_name(name)

    def _issue(self, workspace: Workspace, mode: ApiKeyMode) -> IssuedApiKey:
        api_key = generate_api_key(mode)
        self._workspaces.add_api_key(workspace.id, hash_api_key(api_key), key_prefix(api_key), mode, self._clock())
        return IssuedApiKey(workspace=workspace, api_key=api_key)


class Authenticator:
    """Maps an API key to its workspace id, caching hits for a short time.

    The cache is keyed by the key's hash. A revoked key can keep working in one process
    for at most `cache_ttl_seconds`.
    """

    def __init__(
        self, workspaces: WorkspaceStore, *, cache_ttl_seconds: float = 60.0, cache_size: int = 10_000
    ) -> None:
        self._workspaces = workspaces
        self._cache: TTLCache[str, uuid.UUID] = TTLCache(maxsize=cache_size, ttl=cache_ttl_seconds)
        self._lock = threading.Lock()

    def cached_workspace_id(self, api_key: str | None) -> uuid.UUID | None:
        """Return the workspace id of a key found in the cache, without a database query; None otherwise."""
        if api_key is None or not is_well_formed(api_key):
            return None
        with self._lock:
            return self._cache.get(hash_api_key(api_key))

    def authenticate(self, api_key: str | None) -> uuid.UUID:
        """Return the workspace id of a key; raise ApiKeyMissing (None) or ApiKeyInvalid."""
        if api_key is None:
            raise ApiKeyMissing()
        if not is_well_formed(api_key):
            raise ApiKeyInvalid(key_prefix(api_key))

        key_hash = hash_api_key(api_key)
        with self._lock:
            cached = self._cache.get(key_hash)
        if cached is not None:
            return cached
        workspace_id = self._workspaces.find_workspace_id_by_key_hash(key_hash)
        if workspace_id is None:
            raise ApiKeyInvalid(key_prefix(api_key))
        with self._lock:
            self._cache[key_hash] = workspace_id
        return workspace_id
