"""
Recovery after a reconnect (C{"Since"}), as a property: random publish streams,
random disconnect points and C{Since} values, messages published while the
history is read, and retention cutting in.  The client's view (replay, then live)
must be exactly the messages above its offset, in order, once each; or
C{Recovered: false}, and then only when something could really be missing.

Run on L{wsqueue.testing.MemoryPipeline}: the real stages, links and handshakes,
in memory, on a clock.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.task import deferLater
from twisted.trial.unittest import SynchronousTestCase

from wsqueue.store.memory import MemoryStore
from wsqueue.testing import MemoryPipeline
from wsqueue.topics import matches

TOPICS = ["a.x", "a.y", "b.x"]


class RecoveryPropertyTests(SynchronousTestCase):
    @settings(derandomize=True, max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        before=st.lists(st.sampled_from(TOPICS), min_size=1, max_size=12),
        away=st.lists(st.sampled_from(TOPICS), max_size=12),
        during=st.lists(st.sampled_from(TOPICS), max_size=6),
        pattern=st.sampled_from(["a.x", "a.*", ">", "*.x"]),
        keep=st.integers(1, 30),
        historyMax=st.integers(0, 30),
        back=st.integers(0, 3),
        lagging=st.lists(st.sampled_from(TOPICS), max_size=4),
        slowRead=st.booleans(),
    )
    def test_replayThenLive(self, before, away, during, pattern, keep, historyMax, back, lagging, slowRead) -> None:
        """
        C{lagging}: stored but not yet handed to the subscriber when the history is
        read (its group is behind: after the replay, their live copies are
        duplicates).  C{slowRead}: msgqueue reads the history a moment late, so
        that messages published meanwhile reach the client's subscriber live
        before the reply that also holds them.
        """
        with MemoryPipeline(store=MemoryStore(historyKeep=keep)) as pipeline:
            pipeline.broker.historyMax = historyMax
            if slowRead:
                read = pipeline.broker.history
                pipeline.broker.history = lambda *args: deferLater(pipeline.clock, 0.5, read, *args)  # type: ignore[method-assign]
            publisher = pipeline.addPublisher()
            subscriber = pipeline.addSubscriber()
            sender = pipeline.connectClient(publisher.factory, "/publish")
            topics: list[str] = []  # the topic of offset N is topics[N - 1]

            def send(batch: list[str]) -> None:
                for topic in batch:
                    topics.append(topic)
                    sender.sendJSON({"Topic": topic, "Content": f"m{len(topics)}"})

            first = pipeline.connectClient(subscriber.factory, "/subscribe")
            first.sendJSON({"Topic": ">", "Content": "sub", "Id": 0})
            pipeline.flush()
            send(before)
            pipeline.flush()
            seen = [frame for frame in first.receivedJSON() if "Offset" in frame]
            self.assertEqual([frame["Content"] for frame in seen], [f"m{n}" for n in range(1, len(before) + 1)])
            epoch = seen[0]["Epoch"]
            # The client resumes from a message it saw, not always the last.
            since = seen[max(0, len(seen) - 1 - back)]["Offset"]
            first.sendClose(1000)
            pipeline.flush()

            send(away)
            pipeline.flush()
            again = pipeline.connectClient(subscriber.factory, "/subscribe")
            # Stored behind the broker's back: handed out at its next dispatch only.
            for topic in lagging:
                topics.append(topic)
                pipeline.store.append([(topic, f"m{len(topics)}")])
            again.sendJSON({"Topic": pattern, "Content": "sub", "Id": 1, "Since": {"Offset": since, "Epoch": epoch}})
            send(during)  # on their way while the history is read: before or after it
            pipeline.flush()
            for _ in range(3):
                pipeline.advance(0.5)
            pipeline.broker.entriesAppended(None)
            pipeline.flush()
            pipeline.advance(1)

            frames = again.receivedJSON()
            ack, messages = frames[0], frames[1:]
            self.assertEqual(ack["Ack"], 1, frames)
            offsets = [frame["Offset"] for frame in messages]
            for frame in messages:
                self.assertEqual((frame["Topic"], frame["Content"]), (topics[frame["Offset"] - 1], f"m{frame['Offset']}"))
            self.assertEqual(len(offsets), len(set(offsets)), f"duplicates: {frames}")
            self.assertEqual(offsets, sorted(offsets), f"out of order: {frames}")
            wanted = [offset for offset in range(since + 1, len(topics) + 1) if matches(pattern, topics[offset - 1])]
            if ack["Recovered"]:
                self.assertEqual(offsets, wanted, f"since {since}, keep {keep}, max {historyMax}: {frames}")
            else:
                self.assertEqual(set(ack), {"Ack", "Recovered", "Epoch", "Offset"})
                self.assertEqual(ack["Epoch"], epoch)
                # Honest: refused only when the whole could not be replayed (nothing
                # was dropped with keep >= everything, and the limit held them all).
                self.assertFalse(keep >= len(topics) and historyMax >= len(wanted),
                                 f"Recovered false although nothing could be missing: {frames}")
                # What follows is live: nothing the client had before, and no gap after the Ack's offset.
                self.assertTrue(all(offset > ack["Offset"] for offset in offsets), frames)
                self.assertEqual(offsets, [offset for offset in wanted if offset > ack["Offset"]], frames)
