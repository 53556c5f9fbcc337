"""Message types of the xenstore wire protocol (xs_wire.h, spec 1.3)."""

from enum import IntEnum


class Op(IntEnum):
    CONTROL = 0
    DIRECTORY = 1
    READ = 2
    GET_PERMS = 3
    WATCH = 4
    UNWATCH = 5
    TRANSACTION_START = 6
    TRANSACTION_END = 7
    INTRODUCE = 8
    RELEASE = 9
    GET_DOMAIN_PATH = 10
    WRITE = 11
    MKDIR = 12
    RM = 13
    SET_PERMS = 14
    WATCH_EVENT = 15
    ERROR = 16
    IS_DOMAIN_INTRODUCED = 17
    RESUME = 18
    SET_TARGET = 19
    RESTRICT = 20
    RESET_WATCHES = 21
    DIRECTORY_PART = 22
    GET_FEATURE = 23
    SET_FEATURE = 24
    GET_QUOTA = 25
    SET_QUOTA = 26


#: First type number that is not a message type (``XS_TYPE_COUNT``).
TYPE_COUNT = 27
#: A type guaranteed never to be valid (``XS_INVALID``).
INVALID = 0xFFFF
