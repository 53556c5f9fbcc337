"""The xenstore wire protocol: header, op codes, framing, arguments, errors."""

from pyxenstored.protocol.decoder import Decoder as Decoder
from pyxenstored.protocol.errors import ERROR_NAMES as ERROR_NAMES
from pyxenstored.protocol.errors import ProtocolError as ProtocolError
from pyxenstored.protocol.errors import XenstoreError as XenstoreError
from pyxenstored.protocol.ops import Op as Op
from pyxenstored.protocol.wire import HEADER_SIZE as HEADER_SIZE
from pyxenstored.protocol.wire import PAYLOAD_MAX as PAYLOAD_MAX
from pyxenstored.protocol.wire import Packet as Packet
from pyxenstored.protocol.wire import encode as encode
