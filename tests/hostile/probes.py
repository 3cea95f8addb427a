"""Attack scripts run as ``custom`` tasks. Each tries something a confined run must not be
able to do and prints, as its last line, a JSON object mapping each attempt to the outcome:
``"OK"`` when it worked, otherwise the errno's name (``"EPERM"``, ``"EACCES"``, ...).
Every script is bounded: no loop without an end, no sleep without a limit."""

from __future__ import annotations

import json

OK = "OK"

_OUTCOME = '''
import ctypes, errno, json, os, sys, time

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long


def outcome(result):
    """0 when a C call returned >= 0, else its errno."""
    return 0 if result >= 0 else ctypes.get_errno()


def name(code):
    return errno.errorcode.get(code, "OK") if code else "OK"


def attempt(action, *args):
    """The errno name an os-level action fails with, or OK."""
    try:
        action(*args)
        return "OK"
    except OSError as exc:
        return name(exc.errno)


def isolated(probe):
    """Run ``probe`` in a child, so that what one probe changes (a user namespace, a
    seccomp-free ptrace) cannot colour the next."""
    read, write = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(read)
        try:
            code = probe()
        except OSError as exc:
            code = exc.errno
        os.write(write, str(code).encode())
        os._exit(0)
    os.close(write)
    text = os.read(read, 16)
    os.waitpid(child, 0)
    return name(int(text)) if text else "no answer"
'''

# System calls the seccomp filter refuses; x86_64 numbers where libc has no wrapper.
SYSCALLS = _OUTCOME + r'''
import socket

NR = {"ptrace": 101, "keyctl": 250, "perf_event_open": 298, "bpf": 321, "io_uring_setup": 425}
libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]


def unshare_user():
    return outcome(libc.unshare(0x10000000))                       # CLONE_NEWUSER


def mount():
    target = os.path.join(os.environ["TMPDIR"], "mnt")
    os.mkdir(target)
    result = outcome(libc.mount(b"tmpfs", target.encode(), b"tmpfs", 15, b"size=4k"))
    if result == 0:
        libc.umount2(target.encode(), 2)                            # MNT_DETACH
    return result


def ptrace_sibling():
    target = os.fork()
    if target == 0:
        libc.prctl(0x59616D61, ctypes.c_ulong(-1), 0, 0, 0)        # PR_SET_PTRACER_ANY (Yama)
        time.sleep(10)
        os._exit(0)
    read, write = os.pipe()
    attacker = os.fork()
    if attacker == 0:
        seized = libc.syscall(NR["ptrace"], 0x4206, target, 0, 0)   # PTRACE_SEIZE
        os.write(write, str(outcome(seized)).encode())
        os._exit(0)
    os.close(write)
    result = int(os.read(read, 16))
    os.waitpid(attacker, 0)
    os.kill(target, 9)
    os.waitpid(target, 0)
    return result


def io_uring_setup():
    fd = libc.syscall(NR["io_uring_setup"], 1, ctypes.create_string_buffer(120))
    if fd >= 0:
        os.close(fd)
    return outcome(fd)


def keyctl():
    # KEYCTL_GET_KEYRING_ID of KEY_SPEC_SESSION_KEYRING
    return outcome(libc.syscall(NR["keyctl"], 0, ctypes.c_long(-3), 0))


def bpf():
    attr = ctypes.create_string_buffer(128)                         # BPF_MAP_CREATE, an array
    ctypes.memmove(attr, (ctypes.c_uint32 * 4)(2, 4, 4, 1), 16)
    fd = libc.syscall(NR["bpf"], 0, attr, 128)
    if fd >= 0:
        os.close(fd)
    return outcome(fd)


def perf_event_open():
    attr = ctypes.create_string_buffer(128)                         # software CPU clock, own
    ctypes.memmove(attr, (ctypes.c_uint32 * 2)(1, 128), 8)          # process, user space only
    ctypes.memmove(ctypes.byref(attr, 40), (ctypes.c_uint64 * 1)(1 | 1 << 5 | 1 << 6), 8)
    fd = libc.syscall(NR["perf_event_open"], attr, 0, -1, -1, 0)
    if fd >= 0:
        os.close(fd)
    return outcome(fd)


def tiocsti():
    return outcome(libc.ioctl(0, 0x5412, ctypes.c_char_p(b"x")))   # TIOCSTI on stdin


def socket_inet():
    socket.socket(socket.AF_INET, socket.SOCK_STREAM).close()
    return 0


PROBES = (unshare_user, mount, ptrace_sibling, io_uring_setup, keyctl, bpf, perf_event_open,
          tiocsti, socket_inet)
print(json.dumps({probe.__name__: isolated(probe) for probe in PROBES}))
'''

# What a run holds of root's power: its capability sets, and two things only a capability
# allows (giving a file away, making a device node).
CAPABILITIES = _OUTCOME + r'''
status = dict(line.split(":\t", 1) for line in open("/proc/self/status").read().splitlines()
              if line.startswith("Cap"))
result = {key: int(status[key], 16) for key in ("CapEff", "CapPrm", "CapBnd")}
victim = os.path.join(os.environ["TMPDIR"], "victim")
open(victim, "w").close()
result["chown"] = attempt(os.chown, victim, 65534, 65534)
result["mknod"] = attempt(os.mknod, os.path.join(os.environ["TMPDIR"], "null"),
                          0o600 | 0o020000, os.makedev(1, 3))
print(json.dumps(result))
'''

# Directories outside the allowed ones that a run must not read.
READS = _OUTCOME + r'''
print(json.dumps({{path: attempt(os.listdir, path) for path in {paths!r}
                  if os.path.isdir(path)}}))
'''

# Plant a file in each of the server's own directories (its packages, its Python).
PLANT = _OUTCOME + r'''
def plant(directory):
    os.close(os.open(os.path.join(directory, {name!r}), os.O_WRONLY | os.O_CREAT | os.O_EXCL))

print(json.dumps({{directory: attempt(plant, directory) for directory in {targets!r}}}))
'''

# Another run's private temporary directory: the holder leaves a secret there and says where;
# the reader, running at the same time, tries to read it. Both give up after 15 s.
HOLD_SECRET = '''
import os, time
path = os.path.join(os.environ["TMPDIR"], "secret")
with open(path, "w") as fh:
    fh.write({secret!r})
with open("holder-{tag}", "w") as fh:
    fh.write(path)
end = time.monotonic() + 15
while not os.path.exists("reader-{tag}") and time.monotonic() < end:
    time.sleep(0.02)
'''

READ_SECRET = _OUTCOME + r'''
end = time.monotonic() + 15
while not os.path.exists("holder-{tag}") and time.monotonic() < end:
    time.sleep(0.02)
path = open("holder-{tag}").read()
try:
    found = open(path).read()
except OSError as exc:
    found = name(exc.errno)
open("reader-{tag}", "w").close()
print(json.dumps({{"secret": found}}))
'''

# Connect to the server's own port on every loopback name; exit 7 if nothing connected.
NETWORK = """
import socket, sys
results = []
for host, port in (('127.0.0.1', {port}), ('::1', {port}), ('localhost', {port})):
    try:
        socket.create_connection((host, port), timeout=2).close()
        results.append('connected')
    except OSError as exc:
        results.append(type(exc).__name__)
print(results)
sys.exit(0 if 'connected' in results else 7)
"""


def outcome(run: dict) -> dict:
    """The JSON object a probe printed last."""
    lines = run["stdout"].strip().splitlines()
    assert lines, run
    return json.loads(lines[-1])
