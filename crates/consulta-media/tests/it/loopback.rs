//! Two `MediaPeer`s connected in memory, in simulated time: no sockets, no sleeping.
