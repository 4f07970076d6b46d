package config

import (
	"fmt"
	"io"
	"log/slog"
)

// redacted is what every printed form of a Secret shows instead of its value.
const redacted = "[redacted]"

// Secret holds a credential read from the environment. It prints, logs and marshals as
// "[redacted]" whatever verb or encoder is used, so a Config can be logged or dumped whole;
// Reveal is the only way to read the value, which keeps every use easy to find.
//
// There is no way back from the printed forms: MarshalJSON and MarshalText do not round-trip.
type Secret struct {
	value string
}

// NewSecret wraps a value as a Secret; meant for tests and for code that builds a Config by hand.
func NewSecret(value string) Secret { return Secret{value: value} }

// Reveal returns the secret value. Call it only where the value is handed to the peer that
// needs it (an Authorization header, an SDK's credentials), never to build a message.
func (s Secret) Reveal() string { return s.value }

// IsSet reports whether the secret holds a non-empty value.
func (s Secret) IsSet() bool { return s.value != "" }

// String returns "[redacted]".
func (s Secret) String() string { return redacted }

// GoString returns "[redacted]", so %#v of a struct holding a Secret hides it too.
func (s Secret) GoString() string { return redacted }

// Format prints "[redacted]" for every verb (quoted for %q). Implementing fmt.Formatter closes
// the verbs String does not cover, such as %x, which would otherwise hex-encode the struct.
func (s Secret) Format(f fmt.State, verb rune) {
	if verb == 'q' {
		fmt.Fprintf(f, "%q", redacted)
		return
	}
	_, _ = io.WriteString(f, redacted)
}

// MarshalJSON encodes the secret as the JSON string "[redacted]".
func (s Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + redacted + `"`), nil }

// MarshalText encodes the secret as "[redacted]"; slog's text handler and encoders that use
// encoding.TextMarshaler see only that.
func (s Secret) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// LogValue makes slog log "[redacted]" for a Secret attribute.
func (s Secret) LogValue() slog.Value { return slog.StringValue(redacted) }
