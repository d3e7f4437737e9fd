package redistest

import "testing"

func TestStartStopRestart(t *testing.T) {
	s := Start(t)
	if out, err := s.Do("SET", "k", "v"); err != nil || out != "OK" {
		t.Fatalf("SET: %q %v", out, err)
	}
	s.Kill()
	if _, err := s.Do("PING"); err == nil {
		t.Fatal("server answers after Kill")
	}
	s.Restart()
	if out, err := s.Do("PING"); err != nil || out != "PONG" {
		t.Fatalf("after restart: %q %v", out, err)
	}
}

func TestCluster(t *testing.T) {
	c := StartCluster(t, 3)
	if len(c.Nodes) != 3 {
		t.Fatal(len(c.Nodes))
	}
	if out, err := c.Nodes[0].Do("CLUSTER", "INFO"); err != nil || out == "" {
		t.Fatalf("cluster info: %q %v", out, err)
	}
}
