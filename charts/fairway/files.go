// Package fairway embeds the files of the Helm chart in this directory (the
// chart's .helmignore leaves this Go file out of the chart's package).
package fairway

import "embed"

// Files holds the chart: Chart.yaml, values.yaml, values.schema.json,
// .helmignore and templates/.
//
//go:embed Chart.yaml values.yaml values.schema.json .helmignore all:templates
var Files embed.FS
