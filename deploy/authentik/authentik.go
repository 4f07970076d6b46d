// Package authentik ships the Authentik blueprint that wires the bridge into Authentik's
// Discord source flows, embedded so the bridge binary can hand it out without the source tree.
package authentik

import _ "embed"

// BlueprintName is the file name the blueprint is shipped and documented under.
const BlueprintName = "discord-bridge.yaml"

// Blueprint is the content of discord-bridge.yaml: the gate and sync expression policies and
// their bindings. Operators mount it into Authentik's blueprints directory or import it in the
// admin interface; see the comments at its top for the URL and secret it needs.
//
//go:embed discord-bridge.yaml
var Blueprint []byte
