// Package mqtt is the MQTT trigger: an embedded broker that `polyfn serve`
// runs by default, and the client that subscribes to the topics of the
// functions' triggers.mqtt rules, invokes the functions and publishes their
// results, with at-least-once delivery for QoS 1.
//
// The files: trigger.go is the trigger's lifecycle (Start, Apply, Stop);
// session.go a filter's session with the broker (connection, SUBSCRIBE);
// lane.go the queue of a filter's messages and their dispatch; delivery.go
// the invocation, retries and publication of one message; reload.go what
// a new configuration's rules change (new lanes, retirements, revivals);
// broker.go and store.go the embedded broker and its store.
//
// # Lock order
//
// The trigger's locks, outermost first; a goroutine that holds one takes
// only those below it:
//
//	Trigger.mu   the lanes and the retirements, by filter (trigger.go, reload.go)
//	lane.subMu   one SUBSCRIBE or UNSUBSCRIBE at a time (session.go, reload.go)
//	lane.rmu     the lane's retirement under way (reload.go)
//	lane.qmu     the lane's queue of messages (lane.go, reload.go)
//
// Apply holds Trigger.mu while it waits for a retirement that is already
// disconnecting (retirement.done, bounded by disconnectTimeout); so a
// retirement closes done before it takes Trigger.mu to remove itself.
// SUBSCRIBE runs on goroutines of its own, never under Trigger.mu.
package mqtt
