package authentikstub_test

import (
	"encoding/json"
	"fmt"

	"github.com/discord-authentik-bridge/bridge/test/authentikstub"
)

// A test seeds the stand-in, points the code under test at URL(), and finally asserts on the
// stored state, the request counts and the absence of violations.
func Example() {
	s, err := authentikstub.New(authentikstub.Options{Token: "ak-api-example"})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer s.Close()

	s.AddSource("discord", "Discord")
	pk := s.AddUser(authentikstub.User{
		Username:   "ada",
		Name:       "Ada",
		IsActive:   true,
		Attributes: json.RawMessage(`{"discord":{"id":"1187654321098765431"}}`),
	})
	s.AddConnection("discord", pk, "1187654321098765431")
	s.AddGroup(authentikstub.Group{
		Name:       "Members",
		Attributes: json.RawMessage(`{"discord_role_id":"1187654321098765000"}`),
	})

	// ... run the bridge against s.URL() with the token ...

	fmt.Println(s.UserGroupNames(pk), s.Counts().Writes, s.Counts().Puts, len(s.Violations()))
	// Output: [] 0 0 0
}
