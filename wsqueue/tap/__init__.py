"""
The twistd plugins' options and services: one module per daemon.

Each module has C{Options} and C{makeService(options, reactor=None)}; bad
configuration stops the daemon in C{makeService}, before anything listens, with one
line naming what is wrong.
"""
