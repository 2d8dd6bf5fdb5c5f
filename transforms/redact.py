"""Signed request material out of every log record.

oss2 logs each request's headers at DEBUG (``'authorization': 'OSS id:sig'``,
``x-oss-security-token``) and urllib3 logs request lines, whose query holds a
presigned URL's signature: anyone who reads such a log can replay the request
until it expires. install() puts a record factory in front of logging's, so a
record is redacted when it is made, in whichever process, for every handler
(including Beam's, which ships worker logs to the runner) and every level.
"""
import logging
import re
import threading

REDACTED = '<redacted>'

# Header names: their whole value goes, up to the closing quote, line end or
# '&' ('OSS4-HMAC-SHA256 Credential=..., Signature=...' holds spaces and
# commas; x-oss-security-token is a query parameter of V4 presigned URLs too).
_HEADERS = ('authorization', 'proxy-authorization', 'x-oss-security-token',
            'x-amz-security-token', 'securitytoken', 'ststoken',
            'access_key_secret', 'accesskeysecret')
# Query parameters (and error-reply fields) of signed URLs: the value goes,
# up to the next delimiter.
_PARAMS = ('signature', 'x-oss-signature', 'ossaccesskeyid', 'security-token',
           'x-oss-credential', 'x-oss-access-key-id', 'x-oss-additional-headers',
           'signatureprovided', 'x-amz-signature', 'x-amz-credential')

# No word boundary: in a repr the name may follow an escape ('\\nx-oss-').
_NAME = r'(?:{})'
# name, then ': ' / '=' / "': '" (a dict's repr), then the value, quoted or
# not; a quoted value ends at its own quote.
_HEADER_RE = re.compile(
    _NAME.format('|'.join(map(re.escape, _HEADERS))) +
    r'''(?P<sep>['"]?\s*[:=]\s*)(?:b?(?P<q>['"])(?:\\.|(?!(?P=q)).)*(?P=q)'''
    r'''|[^\r\n'"&\\]+)''', re.IGNORECASE)
_PARAM_RE = re.compile(
    _NAME.format('|'.join(map(re.escape, _PARAMS))) +
    r'''(?P<sep>=|['"]\s*:\s*)(?:b?(?P<q>['"])(?:\\.|(?!(?P=q)).)*(?P=q)'''
    r'''|[^\s&'",;}\])<\\]+)''', re.IGNORECASE)
# The same fields in an OSS error reply (SignatureDoesNotMatch echoes them).
_XML_RE = re.compile(
    r'<(?P<tag>{})>[^<]*</(?P=tag)>'.format(
        '|'.join(map(re.escape, _HEADERS + _PARAMS))), re.IGNORECASE)


def _replace(match: 're.Match') -> str:
  name = match.group(0)[:match.start('sep') - match.start(0)]
  quote = match.group('q') or ''
  return f'{name}{match.group("sep")}{quote}{REDACTED}{quote}'


def redact(text: str) -> str:
  if not text:
    return text
  lowered = text.lower()
  if not any(w in lowered for w in ('author', 'token', 'signature',
                                    'accesskey', 'access_key', 'credential',
                                    'x-oss-')):
    return text   # the common case: nothing to look at
  text = _HEADER_RE.sub(_replace, text)
  text = _PARAM_RE.sub(_replace, text)
  return _XML_RE.sub(
      lambda m: f'<{m.group("tag")}>{REDACTED}</{m.group("tag")}>', text)


_lock = threading.Lock()


def install() -> None:
  """Idempotent, per process; cheap enough to call from every entry point."""
  with _lock:
    previous = logging.getLogRecordFactory()
    if getattr(previous, 'ev_predict_redacts', False):
      return

    def factory(*args, **kwargs):
      record = previous(*args, **kwargs)
      try:
        message = record.getMessage()
      except Exception:  # pylint: disable=broad-except
        # A bad format string: logging reports it when a handler formats;
        # still no unredacted text goes out.
        message = f'{record.msg!r} {record.args!r}'
      clean = redact(message)
      if clean != message:
        record.msg, record.args = clean, ()
      if record.exc_info and record.exc_info[0] is not None:
        trace = logging.Formatter().formatException(record.exc_info)
        clean = redact(trace)
        if clean != trace:
          # Formatters print exc_text when set; Beam's worker handler would
          # also send the raw exception as the entry's trace: drop it.
          record.exc_text, record.exc_info = clean, None
      if record.stack_info:
        record.stack_info = redact(record.stack_info)
      return record

    factory.ev_predict_redacts = True
    logging.setLogRecordFactory(factory)
