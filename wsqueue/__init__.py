"""
wsqueue: a WebSocket publish/subscribe pipeline on Twisted and Autobahn.

Three stages, each a twistd plugin joined to the others over C{wss://}:
msgqueue (a FIFO queue with consumer groups), publisher and subscriber.
"""

# Interfaces, one style per role (mypy checks both, with mypy-zope; see mypy.ini):
#   - zope.interface for pluggable components, which are picked at run time and
#     declare what they implement with @implementer: the message store
#     (wsqueue.store.base.IMessageStore, with memory and SQLite implementations) and
#     the authenticated user (wsqueue.auth.IUser, for twisted.cred); and for
#     Twisted's own interfaces, which are zope interfaces (IPushProducer,
#     IStreamServerEndpoint, ICredentialsChecker..., and the type checker's
#     wsqueue.frames.IConnectionTransport, which combines some of them).
#   - typing.Protocol for everything else: what one part of wsqueue needs from
#     another, met structurally without declaring it (wsqueue.broker.Consumer and
#     Pausable, wsqueue.link.LinkObserver).
__version__ = "0.1.0"
__all__ = ["__version__"]
