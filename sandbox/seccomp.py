"""A system-call filter (seccomp, through libseccomp via ctypes).

A deny list, not an allow list: jobs are arbitrary programs, so everything ordinary stays
allowed and what only serves to escape or to attack the kernel is refused with EPERM:
mounting, namespaces, ptrace and cross-process memory access, kernel modules, kexec, bpf,
perf, io_uring (its operations bypass seccomp), keyrings, clock and swap changes, handle
based opens, terminal input injection (TIOCSTI), and clone3 (whose flags a filter cannot
inspect; ENOSYS makes the C library fall back to clone, whose namespace flags are refused).
With ``deny_network`` the IPv4, IPv6 and raw packet socket families are refused too.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import socket

from . import kernel

log = logging.getLogger(__name__)

_ACT_ALLOW = 0x7FFF0000
_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2
_CMP_EQ = 4
_CMP_MASKED_EQ = 7
_TIOCSTI = 0x5412
_NAMESPACE_FLAGS = 0x7E020000  # CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET

DENIED = (
    "mount", "umount2", "pivot_root", "chroot", "unshare", "setns", "ptrace",
    "process_vm_readv", "process_vm_writev", "kexec_load", "kexec_file_load", "init_module",
    "finit_module", "delete_module", "bpf", "perf_event_open", "userfaultfd", "keyctl",
    "add_key", "request_key", "swapon", "swapoff", "reboot", "settimeofday", "clock_settime",
    "clock_adjtime", "adjtimex", "acct", "quotactl", "open_by_handle_at", "name_to_handle_at",
    "iopl", "ioperm", "lookup_dcookie", "fsopen", "fsconfig", "fsmount", "move_mount",
    "open_tree", "fspick", "mount_setattr", "syslog", "vhangup", "uselib", "sethostname",
    "setdomainname", "io_uring_setup", "io_uring_enter", "io_uring_register",
)


def _errno_action(code: int) -> int:
    return 0x00050000 | (code & 0xFFFF)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


class _ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64),
                ("datum_b", ctypes.c_uint64)]


def _library():
    try:
        lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    except OSError:
        return None
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                                           ctypes.c_uint, ctypes.POINTER(_ArgCmp)]
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    return lib


_LIB = _library()


def available() -> bool:
    return _LIB is not None


class Filter:
    """A prepared filter; build it in the worker, ``load`` it in the job's child."""

    def __init__(self, *, deny_network: bool):
        if _LIB is None:
            raise OSError(errno.ENOSYS, "libseccomp is not available")
        self._ctx = _LIB.seccomp_init(_ACT_ALLOW)
        if not self._ctx:
            raise OSError(errno.ENOMEM, "seccomp_init failed")
        for name in DENIED:
            self._add(name, _errno_action(errno.EPERM))
        self._add("clone3", _errno_action(errno.ENOSYS))
        self._add_any_flag("clone", _errno_action(errno.EPERM), 0, _NAMESPACE_FLAGS)
        self._add("ioctl", _errno_action(errno.EPERM), _ArgCmp(1, _CMP_EQ, _TIOCSTI, 0))
        if deny_network:
            for family in (socket.AF_INET, socket.AF_INET6, socket.AF_PACKET):
                self._add("socket", _errno_action(errno.EACCES), _ArgCmp(0, _CMP_EQ, family, 0))
        self._program = self._export()

    def _add(self, name: str, action: int, *conditions: _ArgCmp) -> None:
        number = _LIB.seccomp_syscall_resolve_name(name.encode())
        if number < 0:
            return  # not a system call on this architecture
        array = (_ArgCmp * len(conditions))(*conditions) if conditions else None
        result = _LIB.seccomp_rule_add_array(self._ctx, action, number, len(conditions), array)
        if result < 0:
            raise OSError(-result, f"adding the seccomp rule for {name} failed")

    def _add_any_flag(self, name: str, action: int, arg: int, mask: int) -> None:
        """Refuse ``name`` when argument ``arg`` has any bit of ``mask`` set (a rule a bit)."""
        for bit in range(64):
            flag = 1 << bit
            if mask & flag:
                self._add(name, action, _ArgCmp(arg, _CMP_MASKED_EQ, flag, flag))

    def _export(self) -> ctypes.Array:
        """Compile the rules to BPF once, here, so loading in the child is one prctl."""
        fd = os.memfd_create("seccomp-bpf", os.MFD_CLOEXEC)
        try:
            result = _LIB.seccomp_export_bpf(self._ctx, fd)
            if result < 0:
                raise OSError(-result, "seccomp_export_bpf failed")
            code = os.pread(fd, 1 << 20, 0)
        finally:
            os.close(fd)
            _LIB.seccomp_release(self._ctx)
        return ctypes.create_string_buffer(code, len(code))

    def load(self) -> None:
        """Install the filter on the calling process (needs no_new_privs or CAP_SYS_ADMIN)."""
        program = _SockFprog(len(self._program) // 8,
                             ctypes.cast(self._program, ctypes.c_void_p))
        if kernel.libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(program), 0, 0):
            err = ctypes.get_errno()
            raise OSError(err, f"loading the seccomp filter: {os.strerror(err)}")
