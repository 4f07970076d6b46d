// Package avatars turns a Discord member's avatar into a small hosted PNG whose URL Authentik
// passes on as the OIDC picture claim, instead of a base64 data URI that bloats every token
// and header. It fetches from Discord's CDN under strict limits, resizes to a square of 64
// pixels, names the result by its SHA-256 and keeps it in a local directory or an S3 bucket,
// doing no work at all for a member whose avatar has not changed.
package avatars
