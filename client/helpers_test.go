package client

import (
	"net/url"
	"strconv"

	grpcresolver "google.golang.org/grpc/resolver"
)

func parseTarget(s string) (grpcresolver.Target, error) {
	u, err := url.Parse(s)
	if err != nil {
		return grpcresolver.Target{}, err
	}
	return grpcresolver.Target{URL: *u}, nil
}

func itoa(i int) string { return strconv.Itoa(i) }
