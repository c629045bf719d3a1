"""
The twistd plugins of wsqueue.  Only ServiceMaker objects here: importing anything
else (the reactor above all) would break C{twistd --reactor=...}.
"""

from twisted.application.service import ServiceMaker

wsqueueMsgQueue = ServiceMaker(
    "wsqueue msgqueue", "wsqueue.tap.msgqueue", "wsqueue's queue daemon (/pushmsg, /popmsg)", "wsqueue-msgqueue"
)
wsqueuePublisher = ServiceMaker(
    "wsqueue publisher", "wsqueue.tap.publisher", "wsqueue's publisher daemon (/publish)", "wsqueue-publisher"
)
wsqueueSubscriber = ServiceMaker(
    "wsqueue subscriber", "wsqueue.tap.subscriber", "wsqueue's subscriber daemon (/subscribe)", "wsqueue-subscriber"
)
wsqueueAllInOne = ServiceMaker(
    "wsqueue", "wsqueue.tap.allinone", "all three wsqueue stages in one process", "wsqueue"
)
