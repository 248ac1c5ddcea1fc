// cluster-gateway-go-peer: the Go reference server of bench/run (issue 18). It has the shape of
// upstream OpenChoreo's cluster-gateway agent listener (internal/cluster-gateway/server.go), written
// here from that shape, not copied:
//
//   - net/http + crypto/tls, TLS 1.2 minimum (1.3 negotiated), ClientAuth = RequestClientCert: the
//     TLS layer asks for a client certificate but does not verify it;
//   - /ws?planeID=&planeType=: per request, for every CR of that (planeType, planeID), a fresh
//     x509.CertPool is built from the CR's CA PEM and the client certificate is verified against it
//     (clientAuth key usage, the handshake's extra certificates as intermediates), like upstream's
//     verifyClientCertificatePerCR; no valid CR -> 401;
//   - gorilla/websocket Upgrader{CheckOrigin: true} (default buffers), then a connection manager
//     (a mutex-guarded map planeIdentifier -> connections, a random connection ID), one reader
//     goroutine per connection with a read deadline that each pong extends, one ping goroutine per
//     connection (ticker, WriteControl ping);
//   - a plain-HTTP health listener with /ready and a small /metrics (names shared with the gateway's
//     so bench/harness.py reads both the same way).
//
// Left out on purpose (each would only add cost to the reference): the Kubernetes client lookup of the
// CRs (here a JSON file read at start), the internal API listener, the tunnel message parsing (idle
// agents send nothing), and upstream's several log lines per connect (one JSON line here).
//
// Usage: cluster-gateway-go-peer --server-cert S.crt --server-key S.key --planes planes.json
// [--addr 127.0.0.1:0] [--health-addr 127.0.0.1:0] [--heartbeat-interval 30s] [--heartbeat-timeout 90s]
// [--log-connections=true]
//
// planes.json: [{"kind":"ClusterDataPlane","name":"cr","planeType":"dataplane","planeID":"id","caFile":"ca.crt"}]
// Logs one JSON line "go-peer started" with agentPort and healthPort on stderr when it listens.
package main

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
)

type planeEntry struct {
	Kind      string `json:"kind"`
	Name      string `json:"name"`
	PlaneType string `json:"planeType"`
	PlaneID   string `json:"planeID"`
	CAFile    string `json:"caFile"`
}

type crCA struct {
	key string // "_cluster/<name>" as upstream's cluster-scoped CR keys
	pem []byte
}

type agentConn struct {
	id       string
	conn     *websocket.Conn
	validCRs []string
	lastSeen time.Time
	mu       sync.Mutex
}

type server struct {
	cas          map[string][]crCA // "<planeType>/<planeID>" -> CRs with their CA PEM
	upgrader     websocket.Upgrader
	hbInterval   time.Duration
	hbTimeout    time.Duration
	logConnects  bool
	mu           sync.Mutex
	conns        map[string][]*agentConn
	sessions     int64
	closed       int64
	pongs        int64
	rejected     int64
	upgradeFails int64
}

func newID() string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return fmt.Sprintf("c-%d", time.Now().UnixNano())
	}
	return hex.EncodeToString(b)
}

func jsonLog(fields map[string]interface{}) {
	fields["time"] = time.Now().UTC().Format(time.RFC3339Nano)
	b, _ := json.Marshal(fields)
	os.Stderr.Write(append(b, '\n'))
}

// verifyPerCR mirrors upstream's per-request verification: one fresh pool per CR, parsed from PEM.
func (s *server) verifyPerCR(cert *x509.Certificate, inter *x509.CertPool, planeType, planeID string) ([]string, error) {
	crs := s.cas[planeType+"/"+planeID]
	if len(crs) == 0 {
		return nil, fmt.Errorf("no %s CRs found with planeID '%s'", planeType, planeID)
	}
	valid := []string{}
	for _, cr := range crs {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(cr.pem) {
			continue
		}
		opts := x509.VerifyOptions{Roots: pool, Intermediates: inter,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
		if _, err := cert.Verify(opts); err == nil {
			valid = append(valid, cr.key)
		}
	}
	if len(valid) == 0 {
		return nil, fmt.Errorf("certificate not valid for any CR of %s/%s", planeType, planeID)
	}
	return valid, nil
}

func (s *server) handleWS(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	planeType, planeID := q.Get("planeType"), q.Get("planeID")
	if planeType == "" || planeID == "" {
		atomic.AddInt64(&s.rejected, 1)
		http.Error(w, "missing planeType or planeID parameter", http.StatusBadRequest)
		return
	}
	if planeType != "dataplane" && planeType != "workflowplane" && planeType != "observabilityplane" {
		atomic.AddInt64(&s.rejected, 1)
		http.Error(w, "invalid planeType", http.StatusBadRequest)
		return
	}
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		atomic.AddInt64(&s.rejected, 1)
		http.Error(w, "no client certificate presented", http.StatusUnauthorized)
		return
	}
	peer := r.TLS.PeerCertificates
	var inter *x509.CertPool
	if len(peer) > 1 {
		inter = x509.NewCertPool()
		for _, c := range peer[1:] {
			inter.AddCert(c)
		}
	}
	valid, err := s.verifyPerCR(peer[0], inter, planeType, planeID)
	if err != nil {
		atomic.AddInt64(&s.rejected, 1)
		http.Error(w, "client certificate verification failed: "+err.Error(), http.StatusUnauthorized)
		return
	}
	conn, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		atomic.AddInt64(&s.upgradeFails, 1)
		return
	}
	planeIdent := planeType + "/" + planeID
	ac := &agentConn{id: newID(), conn: conn, validCRs: valid, lastSeen: time.Now()}
	s.mu.Lock()
	s.conns[planeIdent] = append(s.conns[planeIdent], ac)
	s.mu.Unlock()
	atomic.AddInt64(&s.sessions, 1)
	if s.logConnects {
		jsonLog(map[string]interface{}{"level": "info", "msg": "agent connected", "planeIdentifier": planeIdent,
			"connectionID": ac.id, "validCRs": valid})
	}
	go s.serveConn(planeIdent, ac)
}

func (s *server) unregister(planeIdent string, ac *agentConn) {
	s.mu.Lock()
	list := s.conns[planeIdent]
	for i, c := range list {
		if c == ac {
			list = append(list[:i], list[i+1:]...)
			break
		}
	}
	if len(list) == 0 {
		delete(s.conns, planeIdent)
	} else {
		s.conns[planeIdent] = list
	}
	s.mu.Unlock()
	atomic.AddInt64(&s.sessions, -1)
	atomic.AddInt64(&s.closed, 1)
	ac.conn.Close()
	if s.logConnects {
		jsonLog(map[string]interface{}{"level": "info", "msg": "agent disconnected", "planeIdentifier": planeIdent,
			"connectionID": ac.id})
	}
}

func (s *server) serveConn(planeIdent string, ac *agentConn) {
	defer s.unregister(planeIdent, ac)
	conn := ac.conn
	conn.SetReadDeadline(time.Now().Add(s.hbTimeout))
	conn.SetPongHandler(func(string) error {
		conn.SetReadDeadline(time.Now().Add(s.hbTimeout))
		atomic.AddInt64(&s.pongs, 1)
		ac.mu.Lock()
		ac.lastSeen = time.Now()
		ac.mu.Unlock()
		return nil
	})
	ticker := time.NewTicker(s.hbInterval)
	defer ticker.Stop()
	go func() {
		for range ticker.C {
			if err := conn.WriteControl(websocket.PingMessage, []byte{}, time.Now().Add(10*time.Second)); err != nil {
				return
			}
		}
	}()
	for {
		if _, _, err := conn.ReadMessage(); err != nil {
			return
		}
		ac.mu.Lock()
		ac.lastSeen = time.Now()
		ac.mu.Unlock()
	}
}

func (s *server) handleMetrics(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	fmt.Fprintf(w, "cluster_gateway_agent_sessions %d\n", atomic.LoadInt64(&s.sessions))
	fmt.Fprintf(w, "cluster_gateway_agent_sessions_closed_total %d\n", atomic.LoadInt64(&s.closed))
	fmt.Fprintf(w, "cluster_gateway_heartbeat_rtt_seconds_count %d\n", atomic.LoadInt64(&s.pongs))
	fmt.Fprintf(w, "go_peer_rejected_total %d\n", atomic.LoadInt64(&s.rejected))
	fmt.Fprintf(w, "go_peer_upgrade_failures_total %d\n", atomic.LoadInt64(&s.upgradeFails))
}

func loadPlanes(path string) (map[string][]crCA, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var entries []planeEntry
	if err := json.Unmarshal(raw, &entries); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	cas := map[string][]crCA{}
	pems := map[string][]byte{}
	for _, e := range entries {
		pem, ok := pems[e.CAFile]
		if !ok {
			if pem, err = os.ReadFile(e.CAFile); err != nil {
				return nil, err
			}
			pems[e.CAFile] = pem
		}
		k := e.PlaneType + "/" + e.PlaneID
		cas[k] = append(cas[k], crCA{key: "_cluster/" + e.Name, pem: pem})
	}
	return cas, nil
}

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "agent listener (TLS)")
	healthAddr := flag.String("health-addr", "127.0.0.1:0", "health and metrics listener (plain HTTP)")
	certFile := flag.String("server-cert", "", "server certificate chain (PEM)")
	keyFile := flag.String("server-key", "", "server key (PEM)")
	planesFile := flag.String("planes", "", "JSON list of CRs: kind, name, planeType, planeID, caFile")
	hbInterval := flag.Duration("heartbeat-interval", 30*time.Second, "ping interval")
	hbTimeout := flag.Duration("heartbeat-timeout", 90*time.Second, "read deadline extended by each pong")
	logConnects := flag.Bool("log-connections", true, "one JSON line per connect and disconnect on stderr")
	flag.Parse()
	log.SetFlags(0)
	if *certFile == "" || *keyFile == "" || *planesFile == "" {
		log.Fatal("go-peer: --server-cert, --server-key and --planes are required")
	}
	cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
	if err != nil {
		log.Fatalf("go-peer: server certificate: %v", err)
	}
	cas, err := loadPlanes(*planesFile)
	if err != nil {
		log.Fatalf("go-peer: planes: %v", err)
	}
	s := &server{cas: cas, hbInterval: *hbInterval, hbTimeout: *hbTimeout, logConnects: *logConnects,
		conns:    map[string][]*agentConn{},
		upgrader: websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}}

	tlsConfig := &tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequestClientCert,
		MinVersion: tls.VersionTLS12}
	mux := http.NewServeMux()
	mux.HandleFunc("/ws", s.handleWS)
	srv := &http.Server{Handler: mux, TLSConfig: tlsConfig, ReadTimeout: 30 * time.Second,
		WriteTimeout: 30 * time.Second, IdleTimeout: 120 * time.Second,
		ErrorLog: log.New(os.Stderr, "go-peer http: ", 0)}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatalf("go-peer: listen %s: %v", *addr, err)
	}
	hmux := http.NewServeMux()
	hmux.HandleFunc("/ready", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("OK")) })
	hmux.HandleFunc("/health", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("OK")) })
	hmux.HandleFunc("/metrics", s.handleMetrics)
	hln, err := net.Listen("tcp", *healthAddr)
	if err != nil {
		log.Fatalf("go-peer: listen %s: %v", *healthAddr, err)
	}
	go func() { log.Fatal(http.Serve(hln, hmux)) }()
	go func() {
		if err := srv.ServeTLS(ln, "", ""); err != nil && err != http.ErrServerClosed {
			log.Fatalf("go-peer: %v", err)
		}
	}()
	jsonLog(map[string]interface{}{"level": "info", "msg": "go-peer started",
		"agentPort": ln.Addr().(*net.TCPAddr).Port, "healthPort": hln.Addr().(*net.TCPAddr).Port,
		"planes": len(cas)})
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	// Hijacked WebSocket connections are not closed by Shutdown; the process exit closes them.
	srv.Close()
	os.Exit(0)
}
