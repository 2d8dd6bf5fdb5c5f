"""The one record type that carries an input line through every stage.

A record is created for every non-blank input line and is never dropped: a stage
either fills in the next field or sets ``error``, after which later stages pass it
through untouched. The sink writes results and errors from the same stream, so the
two output files always account for every line.
"""
import dataclasses
from typing import Any, Optional

# Error kinds that can appear in the error file (documented in the README).
BAD_LINE = 'bad_line'          # the line itself cannot be parsed (base64, JSON)
UNSUPPORTED = 'unsupported'    # a scheme or image format we cannot read
NOT_FOUND = 'not_found'        # 404, missing file
FORBIDDEN = 'forbidden'        # 401/403, or outside the allowed locations
TIMEOUT = 'timeout'            # fetch ran out of time after retries
FETCH = 'fetch'                # any other fetch failure (5xx after retries, resets)
TOO_LARGE = 'too_large'        # byte or pixel caps
DECODE = 'decode'              # bytes are not a readable image
INFERENCE = 'inference'        # the model rejected the input
ERROR_KINDS = (BAD_LINE, UNSUPPORTED, NOT_FOUND, FORBIDDEN, TIMEOUT, FETCH,
               TOO_LARGE, DECODE, INFERENCE)


@dataclasses.dataclass(frozen=True)
class Record:
  # The input line exactly as given (bytes, surrounding whitespace stripped): it
  # leads the output line, so odd encodings survive the round trip.
  line: bytes
  # Where the line is in the list: its chunk (transforms/state.py) and its
  # place among the chunk's non-blank lines. The sink puts it back there.
  chunk: int = 0
  index: int = 0
  # Where the image comes from (path or URL), or None when the line carries it.
  source: Optional[str] = None
  # Encoded image bytes once fetched (or decoded from base64).
  data: Optional[bytes] = None
  # Model input for this image: uint8 HxWx3 pixels, or the encoded bytes.
  tensor: Any = None
  # Probabilities over classes (float32 vector) once inferred.
  probs: Any = None
  # Which inference backend produced probs (for the summary).
  backend: Optional[str] = None
  error: Optional[str] = None
  message: Optional[str] = None

  @property
  def ok(self) -> bool:
    return self.error is None

  def fail(self, kind: str, message: str) -> 'Record':
    # Drop the heavy payloads: a failed record only needs to reach the sink.
    return dataclasses.replace(
        self, data=None, tensor=None, probs=None, error=kind,
        message=_one_line(message))

  def but(self, **changes) -> 'Record':
    return dataclasses.replace(self, **changes)

  @property
  def outcome(self) -> str:
    """'ok' or the error kind: the key the summary counts by."""
    return self.error or 'ok'


def first_line(message, limit: int = 300) -> str:
  """An exception's message for a record's: its first line (a traceback or
  a server's reply may follow), at most limit characters."""
  return str(message).split('\n')[0][:limit]


def _one_line(message: str, limit: int = 500) -> str:
  text = ' '.join(valid_text(str(message)).split())
  return text if len(text) <= limit else text[:limit - 3] + '...'


def valid_text(text: str) -> str:
  """text without lone surrogates, so it can be written as UTF-8.

  Paths read from the file list carry their non-UTF-8 bytes as surrogates
  (surrogateescape) and messages quote them: those bytes come back as
  '\\xff', any other lone surrogate as '\\udXXX'."""
  try:
    text.encode('utf-8')
    return text
  except UnicodeEncodeError:
    pass
  try:
    return text.encode('utf-8', 'surrogateescape').decode(
        'utf-8', 'backslashreplace')
  except UnicodeEncodeError:
    return text.encode('utf-8', 'backslashreplace').decode('utf-8')
