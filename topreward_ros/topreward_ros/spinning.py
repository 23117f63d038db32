"""An executor spinning on a background thread, stopped in the order that lets the process exit with its status.

A spin thread still inside rclpy's wait when the interpreter exits aborts the whole process ("terminate
called without an active exception", status 134) whatever status it was about to return: shutting the
executor down only asks the thread to leave, so `stop` also waits until it has.
"""
from __future__ import annotations

import threading


class BackgroundSpin:
    """`executor.spin()` on a daemon thread; `error` holds what ended it, if anything raised."""

    def __init__(self, executor, name: str = "ros-executor") -> None:
        self.executor = executor
        self.error: list[BaseException] = []
        self.thread = threading.Thread(target=self._spin, name=name, daemon=True)
        self.thread.start()

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except BaseException as exc:  # noqa: BLE001 (reported by whoever watches `alive`)
            self.error.append(exc)

    @property
    def alive(self) -> bool:
        return self.thread.is_alive()

    def describe_end(self) -> str:
        """Why the thread ended, in one line."""
        return f"{type(self.error[0]).__name__}: {self.error[0]}" if self.error else "it returned"

    def stop(self, timeout: float = 5.0) -> bool:
        """Shut the executor down and wait for the thread; False if it is still running after `timeout`."""
        self.executor.shutdown(timeout_sec=timeout)
        self.thread.join(timeout)
        return not self.thread.is_alive()
