#!/usr/bin/env python3
"""CPU seconds used so far by a process tree (issue #15).

    proc_cpu.py PID

Prints utime+stime+cutime+cstime summed over PID and all its live descendants, read
from /proc/*/stat, in seconds (clock ticks / SC_CLK_TCK). Children that exited and were
reaped count through their parent's cutime/cstime (for Dovecot: the master reaps every
pop3 process), live ones through their own utime/stime, so nothing is counted twice.
Read it before and after a run; the difference is the server's CPU for the run.
"""
import os
import sys


def stat(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except OSError:
        return None
    rest = s[s.rindex(")") + 2:].split()  # fields from 3 (state) on; comm may hold spaces
    ppid = int(rest[1])
    utime, stime, cutime, cstime = (int(x) for x in rest[11:15])  # fields 14-17
    return ppid, utime + stime + cutime + cstime


def main():
    root = int(sys.argv[1])
    ticks = {}
    children = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = stat(name)
            if st:
                ticks[int(name)] = st[1]
                children.setdefault(st[0], []).append(int(name))
    if root not in ticks:
        print("process %d not found" % root, file=sys.stderr)
        return 1
    total, todo = 0, [root]
    while todo:
        p = todo.pop()
        total += ticks.get(p, 0)
        todo.extend(children.get(p, ()))
    print(f"{total / os.sysconf('SC_CLK_TCK'):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
