package avatars

import (
	"fmt"
	"regexp"
	"strconv"
)

// Member is what names a Discord member's avatar. The hashes are empty when the member has
// none; GuildAvatar is the per-guild avatar a member may set on top of their user avatar.
type Member struct {
	UserID        string
	GuildID       string
	Discriminator string
	UserAvatar    string
	GuildAvatar   string
}

// Source is the CDN image that shows a member's avatar.
type Source struct {
	// URL is the address on the CDN, under the configured base.
	URL string
	// Hash names what URL shows and changes exactly when the picture does: the Discord avatar
	// hash, or "default-{i}" for Discord's i-th default avatar.
	Hash string
}

// Discord's avatar hashes are 32 hex digits, "a_" first for animated ones. The check is looser
// than that, in case the format grows, but keeps anything that could change the CDN path (a
// slash, a dot, a query) out of it.
var (
	hashRE      = regexp.MustCompile(`^[A-Za-z0-9_]{1,64}$`)
	snowflakeRE = regexp.MustCompile(`^[0-9]{1,20}$`)
)

// SourceFor returns the CDN image to fetch for m: the guild avatar when preferGuild is set and
// the member has one, else the user avatar, else Discord's default avatar. cdnBase is the CDN's
// base URL without a trailing slash; edge is the size the bridge stores, and the CDN is asked
// for a larger power of two so that the resize down keeps detail.
func SourceFor(cdnBase string, m Member, preferGuild bool, edge int) (Source, error) {
	if !snowflakeRE.MatchString(m.UserID) {
		return Source{}, newError(KindMember, false, "user id %q is not a snowflake", m.UserID)
	}
	q := "?size=" + strconv.Itoa(CDNSize(edge))

	if preferGuild && m.GuildAvatar != "" {
		if !snowflakeRE.MatchString(m.GuildID) {
			return Source{}, newError(KindMember, false, "guild id %q is not a snowflake",
				m.GuildID)
		}
		if !hashRE.MatchString(m.GuildAvatar) {
			return Source{}, newError(KindMember, false, "guild avatar hash %q is malformed",
				m.GuildAvatar)
		}
		// .png of an animated ("a_") hash is its first frame: a still picture is all an
		// OIDC picture claim should carry.
		u := fmt.Sprintf("%s/guilds/%s/users/%s/avatars/%s.png%s",
			cdnBase, m.GuildID, m.UserID, m.GuildAvatar, q)
		return Source{URL: u, Hash: m.GuildAvatar}, nil
	}

	if m.UserAvatar != "" {
		if !hashRE.MatchString(m.UserAvatar) {
			return Source{}, newError(KindMember, false, "avatar hash %q is malformed",
				m.UserAvatar)
		}
		u := fmt.Sprintf("%s/avatars/%s/%s.png%s", cdnBase, m.UserID, m.UserAvatar, q)
		return Source{URL: u, Hash: m.UserAvatar}, nil
	}

	i, err := DefaultAvatarIndex(m.UserID, m.Discriminator)
	if err != nil {
		return Source{}, err
	}
	// The CDN ignores size for default avatars and always sends the same picture.
	u := fmt.Sprintf("%s/embed/avatars/%d.png", cdnBase, i)
	return Source{URL: u, Hash: "default-" + strconv.Itoa(i)}, nil
}

// DefaultAvatarIndex is the number of the default avatar Discord shows a user without one.
// Users on the new username system (discriminator "0", or none) get (id >> 22) % 6; users
// who still have a four-digit discriminator get discriminator % 5.
func DefaultAvatarIndex(userID, discriminator string) (int, error) {
	if discriminator == "" || discriminator == "0" {
		id, err := strconv.ParseUint(userID, 10, 64)
		if err != nil {
			return 0, newError(KindMember, false, "user id %q is not a snowflake", userID)
		}
		return int((id >> 22) % 6), nil
	}
	d, err := strconv.Atoi(discriminator)
	if err != nil || d < 0 || d > 9999 {
		return 0, newError(KindMember, false, "discriminator %q is not 0 to 9999", discriminator)
	}
	return d % 5, nil
}

// CDNSize is the size to ask the CDN for when the bridge stores edge pixels: the smallest power
// of two at least twice edge, within the 16 to 4096 the CDN accepts (it answers 400 to
// anything else). Twice the edge gives the resampling filter real detail to work from.
func CDNSize(edge int) int {
	n := 16
	for n < 2*edge && n < 4096 {
		n *= 2
	}
	return n
}
