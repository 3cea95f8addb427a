"""Landlock (Linux ≥ 5.13): unprivileged, stackable access control, through ctypes.

A ruleset names the access rights it *handles*; everything handled is denied except what
a rule allows beneath a directory (or on a file). Rights that the running kernel's ABI does
not know are left out, so the same code works from ABI 1 up (the best-effort mode the
kernel documentation recommends). ABI 4 adds TCP bind/connect rules; ABI 6 adds scoping:
no signals to, and no abstract unix sockets of, processes outside the sandbox.
"""

from __future__ import annotations

import ctypes
import os

from .kernel import libc

_SYS_CREATE, _SYS_ADD_RULE, _SYS_RESTRICT = 444, 445, 446
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1

EXECUTE, WRITE_FILE, READ_FILE, READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
_MAKE_AND_REMOVE = sum(1 << bit for bit in range(4, 13))
REFER, TRUNCATE, IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
NET_BIND_TCP, NET_CONNECT_TCP = 1 << 0, 1 << 1
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1 << 0, 1 << 1

READ_ONLY = EXECUTE | READ_FILE | READ_DIR
FILE_RIGHTS = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def abi_version() -> int:
    """The kernel's Landlock ABI version, or 0 where Landlock is missing or disabled."""
    version = libc.syscall(_SYS_CREATE, None, ctypes.c_size_t(0), _CREATE_RULESET_VERSION)
    return max(int(version), 0)


def handled_fs(abi: int) -> int:
    rights = READ_ONLY | WRITE_FILE | _MAKE_AND_REMOVE
    if abi >= 2:
        rights |= REFER
    if abi >= 3:
        rights |= TRUNCATE
    if abi >= 5:
        rights |= IOCTL_DEV
    return rights


class Ruleset:
    """One Landlock ruleset under construction; ``restrict_self`` applies it for good."""

    def __init__(self, abi: int, *, deny_tcp: bool, scoped: bool = True):
        self.abi = abi
        self.fs = handled_fs(abi)
        net = (NET_BIND_TCP | NET_CONNECT_TCP) if deny_tcp and abi >= 4 else 0
        scope = (SCOPE_SIGNAL | SCOPE_ABSTRACT_UNIX_SOCKET) if scoped and abi >= 6 else 0
        attr = _RulesetAttr(self.fs, net, scope)
        size = ctypes.sizeof(_RulesetAttr) if abi >= 6 else (16 if abi >= 4 else 8)
        fd = libc.syscall(_SYS_CREATE, ctypes.byref(attr), ctypes.c_size_t(size), 0)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"landlock_create_ruleset: {os.strerror(err)}")
        self.fd = int(fd)

    def allow(self, path: str, access: int, *, is_dir: bool = True) -> bool:
        """Allow ``access`` beneath directory ``path`` (on ``path`` itself if it is a file).
        False if it does not exist."""
        try:
            target = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            rights = access & self.fs
            if not is_dir:
                rights &= FILE_RIGHTS
            rule = _PathBeneath(rights, target)
            if libc.syscall(_SYS_ADD_RULE, self.fd, _RULE_PATH_BENEATH, ctypes.byref(rule), 0) < 0:
                err = ctypes.get_errno()
                raise OSError(err, f"landlock_add_rule {path}: {os.strerror(err)}")
        finally:
            os.close(target)
        return True

    def restrict_self(self) -> None:
        """Enforce the ruleset on this process and all it will start (needs no_new_privs)."""
        try:
            if libc.syscall(_SYS_RESTRICT, self.fd, 0) < 0:
                err = ctypes.get_errno()
                raise OSError(err, f"landlock_restrict_self: {os.strerror(err)}")
        finally:
            os.close(self.fd)
