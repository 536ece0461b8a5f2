"""A local stand-in for auth.atlassian.com and api.atlassian.com (OAuth 2.0 3LO + Jira REST).

In-process: ``Sandbox(SandboxConfig(port=0)).start()``; as a process: ``python -m sandbox``.
"""

from __future__ import annotations

from sandbox.config import SandboxConfig
from sandbox.server import Sandbox

__all__ = ["Sandbox", "SandboxConfig"]
