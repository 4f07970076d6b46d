// Package guild says what membership of the Discord guild means for the bridge: whether a user
// is a member, a pending member (membership screening not passed) or absent, which roles they
// hold, and the guild's roles with the names, colours and positions people see.
package guild

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/bwmarrin/discordgo"

	"github.com/discord-authentik-bridge/bridge/discord"
)

// State is where a user stands with the guild.
type State string

const (
	// StateMember is a member who has passed membership screening, or a guild without it.
	StateMember State = "member"
	// StatePending is a member who has not passed membership screening yet; Discord shows them
	// the guild but lets them do almost nothing in it.
	StatePending State = "pending"
	// StateAbsent is a user who is not in the guild: never joined, left, kicked or banned.
	StateAbsent State = "absent"
)

// Membership is a user's standing in the guild. Member is nil when State is StateAbsent.
type Membership struct {
	State  State
	Member *discordgo.Member
}

// MemberGetter fetches one guild member; *discord.Client is one. It must return an error
// wrapping discord.ErrNotMember for a user who is not a member.
type MemberGetter interface {
	Member(ctx context.Context, guildID, userID string) (*discordgo.Member, error)
}

var _ MemberGetter = (*discord.Client)(nil)

// Lookup asks Discord where the user stands. Not being a member is an answer (StateAbsent, nil
// error); any other failure is returned, with the zero Membership, because it says nothing
// about the user.
func Lookup(ctx context.Context, g MemberGetter, guildID, userID string) (Membership, error) {
	m, err := g.Member(ctx, guildID, userID)
	if errors.Is(err, discord.ErrNotMember) {
		return Membership{State: StateAbsent}, nil
	}
	if err != nil {
		return Membership{}, fmt.Errorf("look up member: %w", err)
	}
	if m == nil {
		return Membership{}, errors.New("look up member: no member and no error")
	}

	if m.GuildID == "" {
		m.GuildID = guildID
	}
	if m.Pending {
		return Membership{State: StatePending, Member: m}, nil
	}
	return Membership{State: StateMember, Member: m}, nil
}

// Admitted reports whether the membership counts as being in the guild. A pending member counts
// only when allowPending is set: they joined, but have not accepted the guild's rules.
func (m Membership) Admitted(allowPending bool) bool {
	switch m.State {
	case StateMember:
		return true
	case StatePending:
		return allowPending
	default:
		return false
	}
}

// RoleIDs returns the IDs of the member's roles in ascending numeric order, without duplicates.
// The @everyone role, whose ID is the guild's, is left out even if a payload lists it: it is
// not a role a group can be mapped from.
func (m Membership) RoleIDs() []string {
	if m.Member == nil {
		return nil
	}
	ids := make([]string, 0, len(m.Member.Roles))
	for _, id := range m.Member.Roles {
		if id != "" && id != m.Member.GuildID {
			ids = append(ids, id)
		}
	}
	slices.SortFunc(ids, compareIDs)
	return slices.Compact(ids)
}

// compareIDs orders snowflakes numerically: a shorter string of digits is a smaller number.
func compareIDs(a, b string) int {
	if c := cmp.Compare(len(a), len(b)); c != 0 {
		return c
	}
	return strings.Compare(a, b)
}
