#!/usr/bin/env python3
"""A TCP proxy on 127.0.0.1 that adds round-trip time: every chunk read from one side
is written to the other RTT/2 later (order kept, bandwidth not limited).

    bench/delay_proxy.py LISTEN_PORT TARGET_PORT RTT_MS

Used by bench/fetch_compare.sh (DELAY_MS) where the kernel has no netem qdisc (some
VM kernels lack sch_netem); otherwise compare.sh uses netem in its own namespace.
Prints "ready" once listening. Stops on SIGTERM/SIGINT.
"""
import asyncio
import sys
import time


def main():
    listen, target, rtt_ms = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    one_way = rtt_ms / 2000.0

    async def pipe(reader, writer):
        queue = asyncio.Queue()

        async def receive():
            while True:
                data = await reader.read(65536)
                queue.put_nowait((time.monotonic() + one_way, data))
                if not data:
                    return

        async def send():
            while True:
                due, data = await queue.get()
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not data:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()

        await asyncio.gather(receive(), send())

    async def handle(client_r, client_w):
        try:
            server_r, server_w = await asyncio.open_connection("127.0.0.1", target)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(pipe(client_r, server_w), pipe(server_r, client_w),
                             return_exceptions=True)
        client_w.close()
        server_w.close()

    async def serve():
        server = await asyncio.start_server(handle, "127.0.0.1", listen)
        print("ready", flush=True)
        async with server:
            await server.serve_forever()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
