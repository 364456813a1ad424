"""dispy_core.console: the daemons' command reader, on a minimal console."""

from __future__ import annotations

import asyncio
import io
import os

from dispy_core.console import CommandConsole
from dispy_core.testing import console_commands


class EchoConsole(CommandConsole):
    greeting = "hello"
    help = "the commands"
    quit_said = "quitting"
    exit_said = "exiting"

    def __init__(self, target: list[str], **kwargs) -> None:
        super().__init__(**kwargs)
        self.target = target

    def status_text(self) -> str:
        return f"status of {len(self.target)}"

    def other_command(self, cmd: str, args: list[str]) -> bool:
        if cmd != "echo":
            return False
        self.target.append(" ".join(args))
        self.say(" ".join(args))
        return True


def test_common_commands_and_the_programs_own():
    target: list[str] = []
    with console_commands(EchoConsole, target) as (say, calls):
        assert say("") == say(" STATUS ") == "status of 0\n"
        assert say("echo A b") == "a b\n" and target == ["a b"]
        assert say("help") == "the commands\n"
        assert say("status now") == "unknown command 'status now'\nthe commands\n"
        assert say("quit now").startswith("unknown command") and calls == []
        assert say("quit") == "quitting\n" and say("Exit") == "exiting\n"
        assert calls == ["quit", "exit"]


def test_reads_whole_lines_from_stdin_in_the_loop():
    read_fd, write_fd = os.pipe()
    out, calls, target = io.StringIO(), [], []

    async def main() -> None:
        done = asyncio.Event()

        def exit() -> None:
            calls.append("exit")
            done.set()

        with os.fdopen(read_fd) as stdin:
            EchoConsole(target, quit=lambda: calls.append("quit"), exit=exit, stdin=stdin, stdout=out).start()
            os.write(write_fd, b"echo o")  # a partial line waits for the rest
            await asyncio.sleep(0.05)
            assert target == []
            os.write(write_fd, b"ne\necho two\nexit\n")
            await asyncio.wait_for(done.wait(), 5)
            os.close(write_fd)  # end of input: the console stops reading, nothing else happens
            await asyncio.sleep(0.05)

    asyncio.run(main())
    assert out.getvalue() == "hello\none\ntwo\nexiting\n"
    assert target == ["one", "two"] and calls == ["exit"]
