"""Write a local-development .env with fresh random keys (used by `make run`)."""

from __future__ import annotations

import base64
import secrets
import sys
from pathlib import Path


def main(path: str) -> None:
    target = Path(path)
    if target.exists():
        return
    fernet_key = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
    target.write_text(
        "# Local development settings written by `make run`; see .env.example for every variable.\n"
        "DEBUG=true\n"
        "# Local admin without a second factor; production always requires one.\n"
        "ADMIN_REQUIRE_2FA=false\n"
        f"SECRET_KEY={secrets.token_urlsafe(50)}\n"
        f"FERNET_KEYS={fernet_key}\n"
    )
    target.chmod(0o600)
    print(f"Wrote {target} with fresh development keys.")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".env")
