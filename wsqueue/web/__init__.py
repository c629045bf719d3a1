"""
The public daemons' plain HTTP side, on the same port as their WebSockets
(L{wsqueue.server.StageServerProtocol} hands it every request that is not a
WebSocket handshake): browser sign-in (L{wsqueue.web.account}), the HTTP publish
API (L{wsqueue.web.publish}) and the web console (L{wsqueue.web.console}), on
twisted.web (L{wsqueue.web.site}).
"""
