package charts_test

import (
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
)

func loadArchive(path string) (*chart.Chart, error) { return loader.Load(path) }
