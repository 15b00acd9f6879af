// Command producer enqueues one chat job on an llmq farm and prints its tokens
// as they arrive (redigo).
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go run producer.go MODEL "PROMPT"
//
// LLMQ_REDIS_URL and LLMQ_PREFIX say where the farm is. It prints the text as it
// streams, then the terminal event on a line of its own, and exits 0 on done,
// 1 on error, 2 when no terminal event came in time.
package main

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/gomodule/redigo/redis"
)

type event struct {
	Type    string `json:"type"`
	Text    string `json:"text"`
	Attempt int    `json:"attempt"`
	Reason  string `json:"reason"`
}

func env(name, fallback string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return fallback
}

func fail(code int, format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(code)
}

func main() {
	if len(os.Args) != 3 {
		fail(2, "usage: producer MODEL PROMPT")
	}
	model, prompt := os.Args[1], os.Args[2]
	url := env("LLMQ_REDIS_URL", "redis://127.0.0.1:6379")
	prefix := env("LLMQ_PREFIX", "llmq")
	timeout, err := strconv.ParseFloat(env("LLMQ_TIMEOUT_S", "120"), 64)
	if err != nil {
		fail(2, "LLMQ_TIMEOUT_S: %v", err)
	}
	random := make([]byte, 16)
	if _, err := rand.Read(random); err != nil {
		fail(2, "no randomness for the job id: %v", err)
	}
	id := "go-" + hex.EncodeToString(random)
	deadline := time.Now().Add(time.Duration(timeout * float64(time.Second)))

	// Pub/sub needs a connection of its own; the job goes out on a second one.
	subConn, err := redis.DialURL(url)
	if err != nil {
		fail(2, "cannot reach Redis at %s: %v", url, err)
	}
	defer subConn.Close()
	psc := redis.PubSubConn{Conn: subConn}
	if err := psc.Subscribe(fmt.Sprintf("%s:{%s}:tokens", prefix, id)); err != nil {
		fail(2, "SUBSCRIBE: %v", err)
	}
	// Wait for Redis to confirm the subscription before the job exists, so no token is missed.
	switch v := psc.ReceiveWithTimeout(10 * time.Second).(type) {
	case redis.Subscription:
	case error:
		fail(2, "no subscription confirmed: %v", v)
	default:
		fail(2, "unexpected reply to SUBSCRIBE: %v", v)
	}

	conn, err := redis.DialURL(url)
	if err != nil {
		fail(2, "cannot reach Redis at %s: %v", url, err)
	}
	defer conn.Close()
	job, _ := json.Marshal(map[string]any{
		"id": id, "model": model,
		"messages": []map[string]string{{"role": "user", "content": prompt}},
	})
	if _, err := conn.Do("LPUSH", fmt.Sprintf("%s:{chat}:queue", prefix), job); err != nil {
		fail(2, "LPUSH: %v", err)
	}

	for time.Now().Before(deadline) {
		switch v := psc.ReceiveWithTimeout(time.Until(deadline)).(type) {
		case redis.Message:
			// A payload holds one or more whole NDJSON lines.
			for _, line := range strings.Split(strings.TrimRight(string(v.Data), "\n"), "\n") {
				var e event
				if err := json.Unmarshal([]byte(line), &e); err != nil {
					fail(2, "not an event line %q: %v", line, err)
				}
				switch e.Type {
				case "chunk":
					fmt.Print(e.Text)
				case "retry":
					fmt.Fprintf(os.Stderr, "\n[attempt %d starts over: %s]\n", e.Attempt, e.Reason)
				case "done", "error":
					fmt.Printf("\n%s\n", line)
					if e.Type == "error" {
						os.Exit(1)
					}
					return
				}
			}
		case error:
			fail(2, "reading %s's events: %v", id, v)
		}
	}
	fail(2, "no terminal event for %s within %v s", id, timeout)
}
