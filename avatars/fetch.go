package avatars

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Defaults of FetchOptions.
const (
	DefaultFetchTimeout = 10 * time.Second
	DefaultMaxBytes     = 8 << 20
)

// maxRedirects bounds redirects within the CDN host; Discord's CDN sends none.
const maxRedirects = 3

// FetchOptions configure a Fetcher.
type FetchOptions struct {
	// CDNBase is the CDN's base URL, e.g. https://cdn.discordapp.com. Only URLs with its scheme
	// and host are fetched, and only redirects that stay there are followed.
	CDNBase string
	// Timeout bounds one fetch, body included; DefaultFetchTimeout when zero.
	Timeout time.Duration
	// MaxBytes bounds the body; DefaultMaxBytes when zero.
	MaxBytes int64
	// Transport carries the requests; a clone of http.DefaultTransport when nil.
	Transport http.RoundTripper
}

// Fetcher downloads avatar images from Discord's CDN. It uses a client of its own that never
// carries the bot token: the CDN needs none, and a token sent there could leak through any
// proxy or log on the way.
type Fetcher struct {
	scheme   string
	host     string // lower case, default port removed
	client   *http.Client
	maxBytes int64
}

// NewFetcher returns a Fetcher for the CDN at o.CDNBase.
func NewFetcher(o FetchOptions) (*Fetcher, error) {
	base, err := url.Parse(o.CDNBase)
	if err != nil {
		return nil, fmt.Errorf("cdn base url: %w", err)
	}
	if (base.Scheme != "https" && base.Scheme != "http") || base.Host == "" {
		return nil, fmt.Errorf("cdn base url %q: want http(s)://host", o.CDNBase)
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultFetchTimeout
	}
	if o.MaxBytes <= 0 {
		o.MaxBytes = DefaultMaxBytes
	}
	if o.Transport == nil {
		o.Transport = http.DefaultTransport.(*http.Transport).Clone()
	}

	f := &Fetcher{scheme: base.Scheme, host: canonicalHost(base), maxBytes: o.MaxBytes}
	f.client = &http.Client{
		Transport: o.Transport,
		Timeout:   o.Timeout,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if !f.Allowed(req.URL) {
				return newError(KindHost, false, "redirect to %s refused: only %s://%s is allowed",
					redactURL(req.URL), f.scheme, f.host)
			}
			if len(via) > maxRedirects {
				return newError(KindHost, false, "more than %d redirects", maxRedirects)
			}
			return nil
		},
	}
	return f, nil
}

// Allowed reports whether u is on the CDN: same scheme and host as the base, no user info.
func (f *Fetcher) Allowed(u *url.URL) bool {
	return u.Scheme == f.scheme && u.User == nil && canonicalHost(u) == f.host
}

// Fetch downloads the image at rawURL. It refuses URLs off the CDN before sending anything,
// answers other than 200, bodies over the byte limit (without reading past it) and bodies
// that are not images, such as an HTML error page a proxy sends with status 200.
func (f *Fetcher) Fetch(ctx context.Context, rawURL string) ([]byte, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, newError(KindHost, false, "avatar url: %w", err)
	}
	if !f.Allowed(u) {
		return nil, newError(KindHost, false, "fetch %s refused: only %s://%s is allowed",
			redactURL(u), f.scheme, f.host)
	}
	shown := redactURL(u)

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, newError(KindHost, false, "fetch %s: %w", shown, err)
	}
	req.Header.Set("Accept", "image/png,image/webp,image/*;q=0.8")
	req.Header.Set("User-Agent", "discord-authentik-bridge (avatars)")

	resp, err := f.client.Do(req)
	if err != nil {
		return nil, transportError(shown, err)
	}
	defer resp.Body.Close()

	if resp.StatusCode != http.StatusOK {
		return nil, statusError(shown, resp.StatusCode)
	}
	if resp.ContentLength > f.maxBytes {
		return nil, newError(KindTooLarge, false,
			"fetch %s: body of %d bytes is over the limit of %d",
			shown, resp.ContentLength, f.maxBytes)
	}

	// Reading one byte past the limit tells a body of exactly the limit from a longer one
	// without reading the rest.
	body, err := io.ReadAll(io.LimitReader(resp.Body, f.maxBytes+1))
	if err != nil {
		return nil, transportError(shown, err)
	}
	if int64(len(body)) > f.maxBytes {
		return nil, newError(KindTooLarge, false, "fetch %s: body is over the limit of %d bytes",
			shown, f.maxBytes)
	}

	if err := checkImage(resp.Header.Get("Content-Type"), body); err != nil {
		return nil, &Error{Kind: KindNotImage, Err: fmt.Errorf("fetch %s: %w", shown, err)}
	}
	return body, nil
}

// checkImage accepts a body labelled image/* unless its bytes are plainly text, and an
// unlabelled or generically labelled body when its bytes look like an image. The decoder
// has the last word either way.
func checkImage(contentType string, body []byte) error {
	label, _, _ := mime.ParseMediaType(contentType)
	sniffed := http.DetectContentType(body)
	switch {
	case len(body) == 0:
		return errors.New("empty body")
	case strings.HasPrefix(sniffed, "text/"):
		// DetectContentType calls any valid UTF-8 "text/plain", so this is what an HTML error
		// page or a JSON error looks like, whatever the label says.
		return fmt.Errorf("cdn sent %s labelled %q, not an image", mediaOnly(sniffed),
			contentType)
	case strings.HasPrefix(label, "image/"), strings.HasPrefix(sniffed, "image/"):
		return nil
	default:
		return fmt.Errorf("cdn sent %q, not an image", contentType)
	}
}

func mediaOnly(ct string) string {
	m, _, _ := mime.ParseMediaType(ct)
	return m
}

// canonicalHost is u's host in lower case without the scheme's default port, so that
// cdn.discordapp.com and cdn.discordapp.com:443 compare equal.
func canonicalHost(u *url.URL) string {
	host, port := strings.ToLower(u.Hostname()), u.Port()
	defaultPort := (u.Scheme == "https" && port == "443") || (u.Scheme == "http" && port == "80")
	if port == "" || defaultPort {
		return host
	}
	return net.JoinHostPort(host, port)
}

// redactURL is u fit for logs and errors: without user info, which Allowed refuses but which
// a refused URL could still carry.
func redactURL(u *url.URL) string {
	c := *u
	c.User = nil
	return c.String()
}
