//! Clusters of real `scalestore-server` processes on loopback (written below).
