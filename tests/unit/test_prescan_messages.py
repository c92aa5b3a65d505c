"""The pre-scan's typed messages over ``multiprocessing.connection`` (fla_sim.prescan_messages),
the follower's view of its inbox (fla_sim.prescan_follower.Feed) and the start of a follower
process (fla_sim.prescan_process._run). The whole path, through a real SFTP upload, is in
tests/sim/test_prescan.py."""

from __future__ import annotations

import threading
from multiprocessing import Pipe

import pytest

from fla_core.anomalies import ChannelError
from fla_sim.prescan_follower import Abandoned, Feed
from fla_sim.prescan_messages import Closed, Confirmed, Failed, Result, Wanted
from fla_sim.prescan_process import _run


def listening(feed: Feed):
    """A pipe whose receiving end ``feed`` listens to (in a thread); the sending end."""
    inbox, sender = Pipe(duplex=False)
    thread = threading.Thread(target=feed.listen, args=(inbox,), daemon=True)
    thread.start()
    return sender, thread


def test_the_feed_keeps_the_highest_confirmed_position_and_the_final_size():
    feed = Feed()
    sender, thread = listening(feed)
    sender.send(Confirmed(10))
    assert feed.available(10) == 10  # blocks until the position arrived
    sender.send(Wanted())
    sender.send(Closed(25))
    assert feed.available(100) == 25  # complete: fewer bytes than asked are all there is
    feed.wait_wanted()
    sender.close()
    thread.join(5)
    assert not thread.is_alive() and feed.ended
    assert (feed.confirmed, feed.final, feed.wanted) == (25, 25, True)


def test_a_late_lower_position_does_not_move_the_feed_back():
    feed = Feed()
    sender, thread = listening(feed)
    for upto in (10, 4):
        sender.send(Confirmed(upto))
    sender.close()  # everything sent is taken before the end is seen
    thread.join(5)
    assert feed.confirmed == 10


def test_the_end_of_the_inbox_without_a_final_size_abandons_the_upload():
    feed = Feed()
    sender, thread = listening(feed)
    sender.send(Confirmed(10))
    sender.close()
    thread.join(5)
    assert feed.available(10) == 10  # what was confirmed stays readable
    with pytest.raises(Abandoned):
        feed.available(11)
    with pytest.raises(Abandoned):
        feed.wait_wanted()


def test_a_result_with_a_channel_error_crosses_a_connection_intact():
    reader, writer = Pipe(duplex=False)
    sent = Result(outcome=ChannelError("312", "deep schema error"), error=True,
                  digests={"sha256": b"\x01" * 32}, size=123, peak_rss_kb=1, pss_kb=2)
    writer.send(sent)
    got = reader.recv()
    assert isinstance(got, Result) and got.error and got.digests == sent.digests
    assert isinstance(got.outcome, ChannelError)
    assert (got.outcome.code, got.outcome.detail) == ("312", "deep schema error")


def test_a_follower_whose_inbox_ends_before_its_job_exits_as_abandoned():
    inbox, sender = Pipe(duplex=False)
    replies, outbox = Pipe(duplex=False)
    sender.close()
    assert _run(inbox, outbox, None) == 3
    outbox.close()
    with pytest.raises(EOFError):  # nothing was sent
        replies.recv()


def test_a_follower_sent_something_else_than_a_job_first_reports_it():
    inbox, sender = Pipe(duplex=False)
    replies, outbox = Pipe(duplex=False)
    sender.send(Confirmed(10))
    assert _run(inbox, outbox, None) == 2
    failed = replies.recv()
    assert isinstance(failed, Failed) and "expected a job, got Confirmed" in failed.why
