package config

import (
	"errors"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// minWebhookSecret is the shortest webhook secret accepted: the hooks are reachable by anyone
// who can reach the bridge, so a guessable secret is a finding, not a style issue.
const minWebhookSecret = 16

var (
	slugPattern   = regexp.MustCompile(`^[-a-zA-Z0-9_]+$`)
	bucketPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$`)
	logLevels     = []string{"debug", "info", "warn", "error"}
)

// Validate checks the configuration as it is and returns every problem joined, each a
// *VarError naming its variable. Load calls it; call it again after changing a Config by hand.
// maxSyncDeadline keeps the sync hook's answer inside the shipped blueprint's 8 s timeout.
const maxSyncDeadline = 7 * time.Second

func (c *Config) Validate() error { return errors.Join(c.validate(nil)...) }

// checker collects problems, skipping variables that already failed to parse.
type checker struct {
	skip map[string]bool
	errs []error
}

func (ck *checker) add(name, format string, args ...any) {
	if ck.skip[name] {
		return
	}
	ck.errs = append(ck.errs, varErrorf(name, format, args...))
}

func (ck *checker) required(name string, set bool) bool {
	if !set {
		ck.add(name, "required")
	}
	return set
}

func (ck *checker) requiredSecret(name string, s Secret) bool {
	if !s.IsSet() {
		ck.add(name, "required (set it or %s_FILE)", name)
	}
	return s.IsSet()
}

// httpURL checks an absolute http(s) base URL. The value is never echoed: a URL may carry
// credentials.
func (ck *checker) httpURL(name, raw string) {
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		ck.add(name, "not a valid URL")
	case u.Scheme != "http" && u.Scheme != "https":
		ck.add(name, "must be an absolute URL starting with http:// or https://")
	case u.Host == "":
		ck.add(name, "URL has no host")
	case u.User != nil:
		ck.add(name, "URL must not carry credentials")
	case u.RawQuery != "" || u.Fragment != "":
		ck.add(name, "URL must not have a query or fragment")
	}
}

func (ck *checker) oneOf(name, value string, allowed ...string) {
	if !slices.Contains(allowed, value) {
		ck.add(name, "invalid value %q: want one of %s", value, strings.Join(allowed, ", "))
	}
}

func (ck *checker) token(name string, s Secret) {
	if ck.requiredSecret(name, s) && strings.IndexFunc(s.Reveal(), unicode.IsSpace) >= 0 {
		ck.add(name, "contains whitespace: give the bare token, "+
			"without a \"Bot \" or \"Bearer \" prefix")
	}
}

func (c *Config) validate(skip map[string]bool) []error {
	ck := &checker{skip: skip}

	ck.token("BRIDGE_DISCORD_TOKEN", c.Discord.Token)
	guild := c.Discord.GuildID
	if ck.required("BRIDGE_DISCORD_GUILD_ID", guild != "") && !isSnowflake(guild) {
		ck.add("BRIDGE_DISCORD_GUILD_ID", "must be a Discord ID: digits only, at most 20")
	}
	ck.httpURL("BRIDGE_DISCORD_API_URL", c.Discord.APIURL)
	ck.httpURL("BRIDGE_DISCORD_CDN_URL", c.Discord.CDNURL)

	if ck.required("BRIDGE_AUTHENTIK_URL", c.Authentik.URL != "") {
		ck.httpURL("BRIDGE_AUTHENTIK_URL", c.Authentik.URL)
	}
	ck.token("BRIDGE_AUTHENTIK_TOKEN", c.Authentik.Token)
	if !slugPattern.MatchString(c.Authentik.SourceSlug) {
		ck.add("BRIDGE_AUTHENTIK_SOURCE_SLUG", "must be a slug: letters, digits, - and _")
	}

	if ck.requiredSecret("BRIDGE_WEBHOOK_SECRET", c.Webhook.Secret) &&
		utf8.RuneCountInString(c.Webhook.Secret.Reveal()) < minWebhookSecret {
		ck.add("BRIDGE_WEBHOOK_SECRET", "too weak: use at least %d characters, "+
			"for example the output of `openssl rand -hex 32`", minWebhookSecret)
	}
	if c.Webhook.SyncDeadline <= 0 {
		ck.add("BRIDGE_SYNC_DEADLINE", "must be positive")
	} else if c.Webhook.SyncDeadline > maxSyncDeadline {
		// Authentik's policy gives up after 8 s (the shipped blueprint); a longer deadline
		// would only turn "queued" answers into timeouts on its side.
		ck.add("BRIDGE_SYNC_DEADLINE", "must be at most %s, below the blueprint's read timeout",
			maxSyncDeadline)
	}

	c.validateListen(ck)
	ck.required("BRIDGE_DATA_DIR", c.DataDir != "")

	c.validateAvatars(ck)
	c.validateOIDC(ck)

	if c.Sync.ResyncInterval < 0 {
		ck.add("BRIDGE_RESYNC_INTERVAL", "must not be negative (0 turns full passes off)")
	}
	ck.oneOf("BRIDGE_ON_LEAVE", c.Sync.OnLeave, OnLeaveRemoveGroups, OnLeaveDeactivate, OnLeaveKeep)
	if c.Sync.LeaveGrace < 0 {
		ck.add("BRIDGE_LEAVE_GRACE", "must not be negative")
	}
	if !(c.Sync.MaxRemovalShare > 0 && c.Sync.MaxRemovalShare <= 1) {
		ck.add("BRIDGE_MAX_REMOVAL_SHARE", "must be greater than 0 and at most 1, got %v",
			c.Sync.MaxRemovalShare)
	}
	if c.Sync.MappingRefresh <= 0 {
		ck.add("BRIDGE_MAPPING_REFRESH", "must be positive")
	}

	if !ck.skip["BRIDGE_APP_ROLES"] {
		ck.errs = append(ck.errs, checkAppRoles(c.AppRoles)...)
	}

	ck.oneOf("BRIDGE_LOG_LEVEL", c.Log.Level, logLevels...)
	ck.oneOf("BRIDGE_LOG_FORMAT", c.Log.Format, LogFormatText, LogFormatJSON)

	if c.DevNoLogin && !c.ListenIsLoopback() {
		ck.add("BRIDGE_DEV_NO_LOGIN", "allowed only when BRIDGE_LISTEN is a loopback address "+
			"such as 127.0.0.1:8080, [::1]:8080 or localhost:8080")
	}
	return ck.errs
}

func (c *Config) validateListen(ck *checker) {
	_, port, err := net.SplitHostPort(c.Listen)
	if err != nil {
		ck.add("BRIDGE_LISTEN", "invalid address %q: want host:port or :port", c.Listen)
		return
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		ck.add("BRIDGE_LISTEN", "invalid port %q: want a number from 0 to 65535", port)
	}
	if ck.required("BRIDGE_PUBLIC_URL", c.PublicURL != "") {
		ck.httpURL("BRIDGE_PUBLIC_URL", c.PublicURL)
	}
}

func (c *Config) validateAvatars(ck *checker) {
	ck.oneOf("BRIDGE_AVATAR_STORE", c.Avatar.Store, AvatarStoreLocal, AvatarStoreS3)
	if c.Avatar.Size < 16 || c.Avatar.Size > 1024 {
		ck.add("BRIDGE_AVATAR_SIZE", "must be between 16 and 1024 pixels, got %d", c.Avatar.Size)
	}
	if c.Avatar.GCAfter <= 0 {
		ck.add("BRIDGE_AVATAR_GC_AFTER", "must be positive")
	}
	if c.Avatar.Store != AvatarStoreS3 {
		return
	}

	if ck.required("BRIDGE_S3_ENDPOINT", c.S3.Endpoint != "") {
		if strings.Contains(c.S3.Endpoint, "://") || strings.ContainsAny(c.S3.Endpoint, "/?#@") {
			ck.add("BRIDGE_S3_ENDPOINT", "want host or host:port without a scheme or path; "+
				"BRIDGE_S3_USE_SSL chooses https")
		}
	}
	bucket := c.S3.Bucket
	if ck.required("BRIDGE_S3_BUCKET", bucket != "") && !bucketPattern.MatchString(bucket) {
		ck.add("BRIDGE_S3_BUCKET",
			"invalid bucket name %q: 3 to 63 lower-case letters, digits, . and -", bucket)
	}
	ck.required("BRIDGE_S3_REGION", c.S3.Region != "")
	ck.requiredSecret("BRIDGE_S3_ACCESS_KEY", c.S3.AccessKey)
	ck.requiredSecret("BRIDGE_S3_SECRET_KEY", c.S3.SecretKey)
	if ck.required("BRIDGE_S3_PUBLIC_URL", c.S3.PublicURL != "") {
		ck.httpURL("BRIDGE_S3_PUBLIC_URL", c.S3.PublicURL)
	}
}

// validateOIDC enforces all-or-nothing. BRIDGE_ADMIN_GROUPS belongs to the set: without it every
// Authentik user could open the status page, and alone it would have no effect.
func (c *Config) validateOIDC(ck *checker) {
	o := c.OIDC
	anySet := o.Issuer != "" || o.ClientID != "" || o.ClientSecret.IsSet() || len(o.AdminGroups) > 0
	if !anySet {
		return
	}

	const why = "required when any of BRIDGE_OIDC_ISSUER, BRIDGE_OIDC_CLIENT_ID, " +
		"BRIDGE_OIDC_CLIENT_SECRET or BRIDGE_ADMIN_GROUPS is set"
	if o.Issuer == "" {
		ck.add("BRIDGE_OIDC_ISSUER", why)
	} else {
		ck.httpURL("BRIDGE_OIDC_ISSUER", o.Issuer)
	}
	if o.ClientID == "" {
		ck.add("BRIDGE_OIDC_CLIENT_ID", why)
	}
	if !o.ClientSecret.IsSet() {
		ck.add("BRIDGE_OIDC_CLIENT_SECRET", why+" (or use BRIDGE_OIDC_CLIENT_SECRET_FILE)")
	}
	if len(o.AdminGroups) == 0 {
		ck.add("BRIDGE_ADMIN_GROUPS", why)
	}
	if slices.Contains(o.AdminGroups, "") {
		ck.add("BRIDGE_ADMIN_GROUPS", "contains an empty group name")
	}
}

// isSnowflake reports whether s is a Discord ID: 1 to 20 ASCII digits without a leading zero,
// within uint64.
func isSnowflake(s string) bool {
	if s == "" || len(s) > 20 || s[0] == '0' {
		return false
	}
	for i := range len(s) {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	_, err := strconv.ParseUint(s, 10, 64)
	return err == nil
}
