"""``cardionode user add|passwd|role|list|remove``: console accounts, run on the node's machine.

Passwords are read without echo (asked twice) or, with ``--password-stdin``, from the first line of
standard input (scripts); never from the command line, where other users would see them in ``ps``.
"""
from __future__ import annotations

import argparse
import getpass
import sys
import time
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from .accounts import Accounts
    from .store import ConsoleStore

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    from node.config_args import add_config_arguments

    from .store import ROLES

    p = subparsers.add_parser("user", help="console accounts: add, passwd, role, list, remove")
    sub = p.add_subparsers(dest="user_command", required=True)
    add = sub.add_parser("add", help="add a console user")
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=ROLES, help="read-only, operator or admin")
    passwd = sub.add_parser("passwd", help="set a user's password (ends their sessions)")
    passwd.add_argument("name")
    role = sub.add_parser("role", help="change a user's role")
    role.add_argument("name")
    role.add_argument("role", choices=ROLES)
    lst = sub.add_parser("list", help="users, roles, live sessions")
    rm = sub.add_parser("remove", help="remove a user (ends their sessions)")
    rm.add_argument("name")
    for sp in (add, passwd):
        sp.add_argument("--password-stdin", action="store_true",
                        help="read the password from the first line of standard input")
    for sp, fn in ((add, cmd_add), (passwd, cmd_passwd), (role, cmd_role), (lst, cmd_list), (rm, cmd_remove)):
        add_config_arguments(sp)
        sp.set_defaults(func=fn)
    return p


def _accounts(args: argparse.Namespace) -> tuple[Accounts, ConsoleStore]:
    from node.config_args import config_from_args
    from node.state import connect

    from .accounts import Accounts
    from .store import ConsoleStore

    config = config_from_args(args)
    conn = connect(config.node.storage_path)  # creates (0700/0600) or migrates the database
    store = ConsoleStore(lambda: conn)
    return Accounts(store), store


def _password(args: argparse.Namespace) -> str:
    from .accounts import AccountError

    if args.password_stdin:
        line = sys.stdin.readline()
        return line[:-1] if line.endswith("\n") else line
    if not sys.stdin.isatty():
        raise AccountError("no terminal to ask the password on: use --password-stdin")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise AccountError("the two passwords differ")
    return first


def _run(fn: Callable[[], None]) -> int:  # one line on failure, as the node's other commands
    from .accounts import AccountError

    try:
        fn()
    except AccountError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_add(args: argparse.Namespace) -> int:
    accounts, store = _accounts(args)

    def go() -> None:
        accounts.add(args.name, args.role, _password(args))
        store.audit("operator", f"cli:{getpass.getuser()}", "user-add", args.name, {"role": args.role})
        print(f"user {args.name} added as {args.role}")
    return _run(go)


def cmd_passwd(args: argparse.Namespace) -> int:
    accounts, store = _accounts(args)

    def go() -> None:
        accounts.set_password(args.name, _password(args))
        store.audit("operator", f"cli:{getpass.getuser()}", "user-password", args.name)
        print(f"password of {args.name} set; their sessions ended")
    return _run(go)


def cmd_role(args: argparse.Namespace) -> int:
    accounts, store = _accounts(args)

    def go() -> None:
        accounts.set_role(args.name, args.role)
        store.audit("operator", f"cli:{getpass.getuser()}", "user-role", args.name, {"role": args.role})
        print(f"{args.name} is now {args.role}")
    return _run(go)


def cmd_remove(args: argparse.Namespace) -> int:
    accounts, store = _accounts(args)

    def go() -> None:
        accounts.remove(args.name)
        store.audit("operator", f"cli:{getpass.getuser()}", "user-remove", args.name)
        print(f"user {args.name} removed")
    return _run(go)


def cmd_list(args: argparse.Namespace) -> int:
    accounts, _store = _accounts(args)
    users = accounts.list()
    if not users:
        print("no console users (add one: cardionode user add NAME --role admin)")
        return 0
    print(f"{'user':24} {'role':10} {'sessions':>8}  password changed (UTC)")
    for u in users:
        changed = time.strftime("%Y-%m-%d %H:%M", time.gmtime(u["password_changed_at"]))
        print(f"{u['username']:24} {u['role']:10} {u['sessions']:>8}  {changed}")
    return 0
