"""A real SMTP server for the suite (aiosmtpd): takes every message and writes it to a directory.

Usage: smtp_sink.py <directory>. Listens on 127.0.0.1 on a free port and prints `PORT <n>` once
it accepts connections. Each message becomes <directory>/<n>.json, written whole (a temporary
file renamed into place): the envelope, the headers the tests read, and the text and HTML
bodies decoded by Python's own MIME parser, so that the broker's message is read by another
implementation than the one that wrote it.
"""

import asyncio
import email
import email.policy
import itertools
import json
import os
import sys

from aiosmtpd.smtp import SMTP


class Sink:
    def __init__(self, directory):
        self.directory = directory
        self.counter = itertools.count(1)

    async def handle_DATA(self, server, session, envelope):
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        text = message.get_body(preferencelist=("plain",))
        html = message.get_body(preferencelist=("html",))
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "helo": session.host_name,
            "subject": str(message["subject"]),
            "from": str(message["from"]),
            "to": str(message["to"]),
            "content_type": message.get_content_type(),
            "text": text.get_content() if text is not None else None,
            "html": html.get_content() if html is not None else None,
        }
        number = next(self.counter)
        path = os.path.join(self.directory, f"{number:04}.json")
        with open(path + ".tmp", "w", encoding="utf-8") as out:
            json.dump(record, out)
        os.replace(path + ".tmp", path)
        return "250 OK"


async def main(directory):
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(Sink(directory), hostname="sink.test"), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    print(f"PORT {port}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
