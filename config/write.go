package config

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// setting is one line of Write: a variable and the field that holds its value.
type setting struct {
	name  string
	value func(c *Config) any
}

// settings lists every variable in the order of ARCHITECTURE.md §5, then the ones added since,
// so `bridge check` prints them the way the documentation reads.
var settings = []setting{
	{"BRIDGE_DISCORD_TOKEN", func(c *Config) any { return c.Discord.Token }},
	{"BRIDGE_DISCORD_GUILD_ID", func(c *Config) any { return c.Discord.GuildID }},
	{"BRIDGE_DISCORD_API_URL", func(c *Config) any { return c.Discord.APIURL }},
	{"BRIDGE_DISCORD_CDN_URL", func(c *Config) any { return c.Discord.CDNURL }},
	{"BRIDGE_AUTHENTIK_URL", func(c *Config) any { return c.Authentik.URL }},
	{"BRIDGE_AUTHENTIK_TOKEN", func(c *Config) any { return c.Authentik.Token }},
	{"BRIDGE_AUTHENTIK_SOURCE_SLUG", func(c *Config) any { return c.Authentik.SourceSlug }},
	{"BRIDGE_WEBHOOK_SECRET", func(c *Config) any { return c.Webhook.Secret }},
	{"BRIDGE_LISTEN", func(c *Config) any { return c.Listen }},
	{"BRIDGE_PUBLIC_URL", func(c *Config) any { return c.PublicURL }},
	{"BRIDGE_DATA_DIR", func(c *Config) any { return c.DataDir }},
	{"BRIDGE_AVATAR_STORE", func(c *Config) any { return c.Avatar.Store }},
	{"BRIDGE_S3_ENDPOINT", func(c *Config) any { return c.S3.Endpoint }},
	{"BRIDGE_S3_BUCKET", func(c *Config) any { return c.S3.Bucket }},
	{"BRIDGE_S3_REGION", func(c *Config) any { return c.S3.Region }},
	{"BRIDGE_S3_ACCESS_KEY", func(c *Config) any { return c.S3.AccessKey }},
	{"BRIDGE_S3_SECRET_KEY", func(c *Config) any { return c.S3.SecretKey }},
	{"BRIDGE_S3_PUBLIC_URL", func(c *Config) any { return c.S3.PublicURL }},
	{"BRIDGE_S3_USE_SSL", func(c *Config) any { return c.S3.UseSSL }},
	{"BRIDGE_OIDC_ISSUER", func(c *Config) any { return c.OIDC.Issuer }},
	{"BRIDGE_OIDC_CLIENT_ID", func(c *Config) any { return c.OIDC.ClientID }},
	{"BRIDGE_OIDC_CLIENT_SECRET", func(c *Config) any { return c.OIDC.ClientSecret }},
	{"BRIDGE_ADMIN_GROUPS", func(c *Config) any { return c.OIDC.AdminGroups }},
	{"BRIDGE_RESYNC_INTERVAL", func(c *Config) any { return c.Sync.ResyncInterval }},
	{"BRIDGE_ON_LEAVE", func(c *Config) any { return c.Sync.OnLeave }},
	{"BRIDGE_LEAVE_GRACE", func(c *Config) any { return c.Sync.LeaveGrace }},
	{"BRIDGE_REVOKE_ON_LOSS", func(c *Config) any { return c.Sync.RevokeOnLoss }},
	{"BRIDGE_MAX_REMOVAL_SHARE", func(c *Config) any { return c.Sync.MaxRemovalShare }},
	{"BRIDGE_ALLOW_SUPERUSER_GROUPS", func(c *Config) any { return c.Sync.AllowSuperuserGroups }},
	{"BRIDGE_AVATAR_SIZE", func(c *Config) any { return c.Avatar.Size }},
	{"BRIDGE_AVATAR_PREFER_GUILD", func(c *Config) any { return c.Avatar.PreferGuild }},
	{"BRIDGE_APP_ROLES", func(c *Config) any { return c.AppRoles }},

	{"BRIDGE_GATE_ALLOW_PENDING", func(c *Config) any { return c.Sync.GateAllowPending }},
	{"BRIDGE_SYNC_DEADLINE", func(c *Config) any { return c.Webhook.SyncDeadline }},
	{"BRIDGE_SET_NAME", func(c *Config) any { return c.Sync.SetName }},
	{"BRIDGE_MAPPING_REFRESH", func(c *Config) any { return c.Sync.MappingRefresh }},
	{"BRIDGE_S3_PREFIX", func(c *Config) any { return c.S3.Prefix }},
	{"BRIDGE_AVATAR_GC_AFTER", func(c *Config) any { return c.Avatar.GCAfter }},
	{"BRIDGE_LOG_LEVEL", func(c *Config) any { return c.Log.Level }},
	{"BRIDGE_LOG_FORMAT", func(c *Config) any { return c.Log.Format }},
	{"BRIDGE_GATEWAY", func(c *Config) any { return c.Gateway }},
	{"BRIDGE_DEV_NO_LOGIN", func(c *Config) any { return c.DevNoLogin }},
}

// Write prints the effective configuration as KEY=value lines, one per variable, in the order
// of ARCHITECTURE.md §5 followed by the variables added since. A secret shows "[redacted]" when
// set and nothing when not; values with spaces, quotes or control characters are Go-quoted so
// every setting stays on one line. Write errors are ignored: the output is for people.
func (c *Config) Write(w io.Writer) {
	for _, s := range settings {
		fmt.Fprintf(w, "%s=%s\n", s.name, quoteIfNeeded(show(s.value(c))))
	}
}

// show renders a value as its variable would be written; a set secret shows only "[redacted]".
func show(v any) string {
	switch v := v.(type) {
	case Secret:
		if v.IsSet() {
			return redacted
		}
		return ""
	case string:
		return v
	case bool:
		return strconv.FormatBool(v)
	case int:
		return strconv.Itoa(v)
	case float64:
		return strconv.FormatFloat(v, 'g', -1, 64)
	case time.Duration:
		return v.String()
	case []string:
		return strings.Join(v, ",")
	case []AppRole:
		return formatAppRoles(v)
	default:
		return fmt.Sprint(v)
	}
}

func quoteIfNeeded(v string) string {
	if strings.ContainsFunc(v, func(r rune) bool {
		return r <= ' ' || r == '"' || r == '\'' || r == '\\' || r == '#' || r == '$' || r == 0x7f
	}) {
		return strconv.Quote(v)
	}
	return v
}
