"""Schemathesis hooks for the CRM event log API (loaded through SCHEMATHESIS_HOOKS).

`POST /v1/metrics` takes a TOML definition as `application/toml`; Schemathesis has no
serializer for that media type, so TOML bodies are sent as the text they are (the
`text/plain` serializer).
"""

import schemathesis

schemathesis.serializer.alias("application/toml", "text/plain")
