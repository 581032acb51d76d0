"""`mapsync web`: the dashboard's credentials: hash a password for `web: users`, revoke sessions."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from mapsync.cli.common import SheetArg, app, fail, load_sheet, open_store, operator, out

web_app = typer.Typer(no_args_is_help=True, help="The dashboard's users and sessions (docs/dashboard.md).")
app.add_typer(web_app, name="web")


@web_app.command("hash-password")
def hash_password(
    stdin: Annotated[
        bool, typer.Option("--stdin", help="Read the password from the first line of standard input.")
    ] = False,
) -> None:
    """Print the scrypt hash of a password for `web: users: NAME: {password_hash: ...}`.

    Asks twice (hidden) unless --stdin. The password itself is never printed or stored.
    """
    from mapsync.web import passwords  # lazy: only this command needs it

    if stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True)
        if typer.prompt("Again", hide_input=True) != password:
            raise fail("the two passwords differ", 2)
    if len(password) < 8:
        raise fail("the password needs at least 8 characters", 2)
    out.print(passwords.hash_password(password), markup=False, highlight=False)


@web_app.command("sessions")
def sessions(
    sheet: SheetArg,
    revoke: Annotated[bool, typer.Option("--revoke", help="Close the sessions (log the users out).")] = False,
    user: Annotated[str | None, typer.Option("--user", help="Only this user's sessions.")] = None,
) -> None:
    """Revoke dashboard login sessions: everyone's, or one user's with --user (bearer tokens are
    revoked by changing them in the sheet)."""
    if not revoke:
        raise fail("say --revoke (optionally with --user U): listing sessions is not offered", 2)
    loaded = load_sheet(sheet)
    store = open_store(loaded, create=False)
    try:
        closed = int(store.sessions.close_sessions(user))
        # every CLI action is in the audit log, as the dashboard's are
        store.audit.record_action(
            operator(), "revoke_sessions", None, {"user": user, "closed": closed, "via": "cli"}
        )
    finally:
        store.close()
    whose = f"of {user} " if user else ""
    out.print(f"revoked {closed} session(s) {whose}".rstrip(), markup=False, highlight=False)
