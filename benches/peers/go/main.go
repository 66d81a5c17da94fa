// Command go-peer is a benchmark peer built on gorilla/websocket.
//
// /echo echoes every text and binary message. /ws?room=NAME (room "lobby" when none is
// given) is the gorilla/websocket chat example with one hub per room: a hub goroutine
// owns the room's clients, each client has a send channel of 256 messages, a client
// whose channel is full is dropped by the hub, and the writePump coalesces the messages
// queued for a client into one text frame, joined by '\n', as the example does.
// Anything else is 404.
//
// Built in GOPATH mode against Debian's golang-github-gorilla-websocket-dev (see
// scripts/build-peers).
package main

import (
	"bytes"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
)

// Constants of the gorilla chat example, except maxMessageSize: the example's 512 bytes
// would cut off benchmark payloads, so the limit matches the Rust peers' default (64 MiB).
const (
	writeWait      = 10 * time.Second
	pongWait       = 60 * time.Second
	pingPeriod     = (pongWait * 9) / 10
	maxMessageSize = 64 << 20
	sendQueue      = 256
)

var (
	newline = []byte{'\n'}
	space   = []byte{' '}
)

// The echo example's upgrader (default buffer sizes); the chat example's (1024/1024).
// Both accept any origin: the benchmark clients are not browsers.
var (
	echoUpgrader = websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
	chatUpgrader = websocket.Upgrader{
		ReadBufferSize:  1024,
		WriteBufferSize: 1024,
		CheckOrigin:     func(*http.Request) bool { return true },
	}
)

func echo(w http.ResponseWriter, r *http.Request) {
	c, err := echoUpgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer c.Close()
	for {
		mt, message, err := c.ReadMessage()
		if err != nil {
			return
		}
		if err := c.WriteMessage(mt, message); err != nil {
			return
		}
	}
}

// hub is the chat example's Hub: the set of a room's clients, owned by its run goroutine.
type hub struct {
	clients    map[*client]bool
	broadcast  chan []byte
	register   chan *client
	unregister chan *client
	done       chan struct{}
}

func newHub() *hub {
	return &hub{
		clients:    make(map[*client]bool),
		broadcast:  make(chan []byte),
		register:   make(chan *client),
		unregister: make(chan *client),
		done:       make(chan struct{}),
	}
}

func (h *hub) run() {
	for {
		select {
		case c := <-h.register:
			h.clients[c] = true
		case c := <-h.unregister:
			if _, ok := h.clients[c]; ok {
				delete(h.clients, c)
				close(c.send)
			}
		case message := <-h.broadcast:
			for c := range h.clients {
				select {
				case c.send <- message:
				default:
					// Too slow: drop the client (its writePump sends a close frame).
					close(c.send)
					delete(h.clients, c)
				}
			}
		case <-h.done:
			return
		}
	}
}

// rooms maps a room name to its hub; a hub is started by its room's first client and
// stopped when the last one has left (refs counts the clients holding it).
type rooms struct {
	mu   sync.Mutex
	hubs map[string]*hub
	refs map[string]int
}

func (rs *rooms) acquire(name string) *hub {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	h, ok := rs.hubs[name]
	if !ok {
		h = newHub()
		rs.hubs[name] = h
		go h.run()
	}
	rs.refs[name]++
	return h
}

func (rs *rooms) release(name string) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	rs.refs[name]--
	if rs.refs[name] == 0 {
		close(rs.hubs[name].done)
		delete(rs.hubs, name)
		delete(rs.refs, name)
	}
}

var chatRooms = &rooms{hubs: make(map[string]*hub), refs: make(map[string]int)}

// client is the chat example's Client.
type client struct {
	hub  *hub
	conn *websocket.Conn
	send chan []byte
}

// readPump pumps messages from the connection to the hub, as in the example.
func (c *client) readPump(room string) {
	defer func() {
		c.hub.unregister <- c
		c.conn.Close()
		chatRooms.release(room)
	}()
	c.conn.SetReadLimit(maxMessageSize)
	c.conn.SetReadDeadline(time.Now().Add(pongWait))
	c.conn.SetPongHandler(func(string) error { c.conn.SetReadDeadline(time.Now().Add(pongWait)); return nil })
	for {
		mt, message, err := c.conn.ReadMessage()
		if err != nil {
			break
		}
		// The contract broadcasts text messages only.
		if mt != websocket.TextMessage {
			continue
		}
		// As in the example: newlines would be ambiguous in a coalesced frame.
		message = bytes.TrimSpace(bytes.Replace(message, newline, space, -1))
		c.hub.broadcast <- message
	}
}

// writePump pumps messages from the hub to the connection, as in the example: every
// message already queued joins the current one in the same frame, separated by '\n'.
func (c *client) writePump() {
	ticker := time.NewTicker(pingPeriod)
	defer func() {
		ticker.Stop()
		c.conn.Close()
	}()
	for {
		select {
		case message, ok := <-c.send:
			c.conn.SetWriteDeadline(time.Now().Add(writeWait))
			if !ok {
				// The hub closed the channel.
				c.conn.WriteMessage(websocket.CloseMessage, []byte{})
				return
			}
			w, err := c.conn.NextWriter(websocket.TextMessage)
			if err != nil {
				return
			}
			w.Write(message)
			n := len(c.send)
			for i := 0; i < n; i++ {
				w.Write(newline)
				w.Write(<-c.send)
			}
			if err := w.Close(); err != nil {
				return
			}
		case <-ticker.C:
			c.conn.SetWriteDeadline(time.Now().Add(writeWait))
			if err := c.conn.WriteMessage(websocket.PingMessage, nil); err != nil {
				return
			}
		}
	}
}

func chat(w http.ResponseWriter, r *http.Request) {
	room := r.URL.Query().Get("room")
	if room == "" {
		room = "lobby"
	}
	conn, err := chatUpgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	h := chatRooms.acquire(room)
	c := &client{hub: h, conn: conn, send: make(chan []byte, sendQueue)}
	h.register <- c
	go c.writePump()
	go c.readPump(room)
}

// raiseNofile lifts the soft RLIMIT_NOFILE to the hard limit (Go 1.19+ does this at
// start-up too; done here so it holds whatever the toolchain).
func raiseNofile() {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		log.Printf("getrlimit: %v", err)
		return
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			log.Printf("setrlimit: %v", err)
		}
	}
}

func main() {
	addr := flag.String("addr", "127.0.0.1:9001", "address to listen on")
	workers := flag.Int("workers", 1, "GOMAXPROCS (threads running Go code)")
	flag.Parse()
	if *workers < 1 {
		log.Fatalf("bad worker count %d", *workers)
	}
	runtime.GOMAXPROCS(*workers)
	raiseNofile()

	mux := http.NewServeMux()
	mux.HandleFunc("/echo", echo)
	mux.HandleFunc("/ws", chat)
	mux.HandleFunc("/", http.NotFound)

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatalf("listen %s: %v", *addr, err)
	}
	fmt.Printf("listening on %s\n", ln.Addr())
	os.Stdout.Sync()

	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
		<-sig
		os.Exit(0)
	}()
	if err := http.Serve(ln, mux); err != nil {
		log.Fatal(err)
	}
}
