#!/usr/bin/env python3
"""A slow POP3 client that reads like a real one: Python's poplib (issue #15).

    poplib_client.py HOST PORT USERS_FILE WORKERS SESSIONS_PER_USER
                     [--max-per-session N] [--timeout 30] [--time-limit 300]

USERS_FILE holds `user:password` lines. WORKERS processes run at once; worker i takes
users i, i+WORKERS, ... (servers lock a maildrop per session, so one user is never in
two sessions at once) and runs SESSIONS_PER_USER sessions for each, one after the
other. A session: poplib.POP3 (USER/PASS), stat(), uidl(), retr(n) for every message
(or the first --max-per-session) one at a time -- poplib reads each reply line by line
-- then quit() without deleting anything. Every socket operation is bounded by
--timeout and the whole run by --time-limit (no new session or RETR after it; workers
still alive 2 x --timeout later are killed). Prints one JSON object: messages, bytes
(message bodies as returned by poplib, line ends included), wall_s, sessions, errors.
"""
import argparse
import json
import multiprocessing as mp
import poplib
import sys
import time


def worker(idx, args, users, deadline, out):
    msgs = nbytes = sessions = errors = 0
    sample = None
    mine = users[idx::args.workers]
    for _ in range(args.sessions):
        for user, password in mine:
            if time.monotonic() >= deadline:
                break
            try:
                p = poplib.POP3(args.host, args.port, timeout=args.timeout)
                try:
                    p.user(user)
                    p.pass_(password)
                    count, _size = p.stat()
                    p.uidl()
                    n = count if args.max_per_session is None else min(count, args.max_per_session)
                    for i in range(1, n + 1):
                        if time.monotonic() >= deadline:
                            break
                        _resp, lines, octets = p.retr(i)
                        msgs += 1
                        nbytes += octets
                    p.quit()
                    sessions += 1
                finally:
                    p.close()
            except Exception as e:  # counted, sampled, and the next session goes on
                errors += 1
                sample = sample or f"{user}: {type(e).__name__}: {e}"[:300]
    out.put(dict(messages=msgs, bytes=nbytes, sessions=sessions, errors=errors, sample=sample))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("users_file")
    ap.add_argument("workers", type=int)
    ap.add_argument("sessions", type=int, help="sessions per user")
    ap.add_argument("--max-per-session", type=int, default=None)
    ap.add_argument("--timeout", type=float, default=30.0)
    ap.add_argument("--time-limit", type=float, default=300.0)
    args = ap.parse_args()
    users = []
    for line in open(args.users_file):
        line = line.strip()
        if line and ":" in line:
            u, p = line.split(":", 1)
            users.append((u, p))
    args.workers = max(1, min(args.workers, len(users)))

    out = mp.Queue()
    t0 = time.monotonic()
    deadline = t0 + args.time_limit
    procs = [mp.Process(target=worker, args=(i, args, users, deadline, out)) for i in range(args.workers)]
    for p in procs:
        p.start()
    results = []
    hard = deadline + 2 * args.timeout
    while len(results) < len(procs) and time.monotonic() < hard:
        try:
            results.append(out.get(timeout=max(0.1, min(1.0, hard - time.monotonic()))))
        except Exception:
            pass
    wall = time.monotonic() - t0
    for p in procs:
        p.join(timeout=1)
        if p.is_alive():
            p.kill()
            p.join()
    r = dict(client="poplib", messages=sum(x["messages"] for x in results),
             bytes=sum(x["bytes"] for x in results), wall_s=wall,
             sessions=sum(x["sessions"] for x in results),
             errors=sum(x["errors"] for x in results) + (len(procs) - len(results)),
             workers=args.workers)
    r["messages_per_s"] = r["messages"] / wall if wall > 0 else 0.0
    r["error_sample"] = next((x["sample"] for x in results if x["sample"]), None)
    json.dump(r, sys.stdout)
    print()
    return 0 if r["sessions"] > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
