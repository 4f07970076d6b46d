package avatars

import (
	"context"
	"errors"
	"fmt"
	"net/http"
)

// Kind names what went wrong with an avatar, in words a status page and a metric label can
// use. Whether it is worth retrying is in Error.Retryable.
type Kind string

// The kinds of avatar failure.
const (
	KindNetwork       Kind = "network"         // no answer: refused, reset, timed out
	KindStatus        Kind = "status"          // the CDN answered a status other than 200
	KindHost          Kind = "host"            // a URL or redirect off the allowed CDN host
	KindNotImage      Kind = "not_image"       // the body is no image (an HTML page, say)
	KindTooLarge      Kind = "too_large"       // the body is over the byte limit
	KindTooManyPixels Kind = "too_many_pixels" // the image declares more pixels than allowed
	KindDecode        Kind = "decode"          // a format we read, but broken or truncated
	KindEncode        Kind = "encode"          // encoding the PNG failed
	KindStore         Kind = "store"           // the avatar store failed
	KindMember        Kind = "member"          // the member's ID or hash names no avatar
	KindCanceled      Kind = "canceled"        // the caller's context ended
	KindUnclassified  Kind = "unclassified"    // an error that is not an *Error
)

// Error is an avatar failure with its kind and whether trying again later may succeed.
type Error struct {
	Kind      Kind
	Retryable bool
	// Status is the HTTP status of a KindStatus error, else 0.
	Status int
	Err    error
}

func (e *Error) Error() string { return e.Err.Error() }

func (e *Error) Unwrap() error { return e.Err }

// Retryable reports whether err may go away on its own: timeouts, refused connections, 5xx
// and 429 answers, a store that is down. Final errors (404, 400, not an image, too big) come
// back on every try until the member changes their avatar.
func Retryable(err error) bool {
	var e *Error
	if errors.As(err, &e) {
		return e.Retryable
	}
	return false
}

// KindOf returns the Kind of err, or "unclassified" when err carries none.
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return KindUnclassified
}

func newError(kind Kind, retryable bool, format string, args ...any) *Error {
	return &Error{Kind: kind, Retryable: retryable, Err: fmt.Errorf(format, args...)}
}

// statusError classifies a CDN answer other than 200. 408, 425, 429 and 5xx are worth another
// try; the rest (400 for a bad size, 403, 404 for a hash that no longer exists) are not.
func statusError(url string, status int) *Error {
	retry := status == http.StatusRequestTimeout || status == http.StatusTooEarly ||
		status == http.StatusTooManyRequests || status >= 500
	return &Error{
		Kind:      KindStatus,
		Retryable: retry,
		Status:    status,
		Err:       fmt.Errorf("fetch %s: cdn answered %d %s", url, status, http.StatusText(status)),
	}
}

// transportError classifies an error from the HTTP client or from reading a body. Errors this
// package raised itself (a refused redirect) keep their kind.
func transportError(url string, err error) error {
	wrapped := fmt.Errorf("fetch %s: %w", url, err)
	var e *Error
	if errors.As(err, &e) {
		return &Error{Kind: e.Kind, Retryable: e.Retryable, Status: e.Status, Err: wrapped}
	}
	if errors.Is(err, context.Canceled) {
		return &Error{Kind: KindCanceled, Retryable: true, Err: wrapped}
	}
	// Timeouts, refused and reset connections, DNS failures: all transient as far as we can
	// tell, and a CDN that stays unreachable shows up as repeated failures.
	return &Error{Kind: KindNetwork, Retryable: true, Err: wrapped}
}
