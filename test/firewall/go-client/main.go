// A proxy-unaware client: `client CA_FILE NETWORK URL` (NETWORK tcp4 or tcp6) fetches URL with no proxy
// at all (Proxy: nil, whatever the environment says), resolving names the system way (/etc/hosts), and
// prints `STATUS BODY` or `error MESSAGE`.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"
)

func main() {
	pem, err := os.ReadFile(os.Args[1])
	if err != nil {
		fmt.Println("error", err)
		os.Exit(2)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	network := os.Args[2]
	d := &net.Dialer{Timeout: 5 * time.Second}
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		Proxy:           nil,
		TLSClientConfig: &tls.Config{RootCAs: pool},
		DialContext: func(ctx context.Context, _ string, addr string) (net.Conn, error) {
			return d.DialContext(ctx, network, addr)
		},
	}}
	r, err := c.Get(os.Args[3])
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	b, _ := io.ReadAll(r.Body)
	fmt.Println(r.StatusCode, strings.TrimSpace(string(b)))
}
