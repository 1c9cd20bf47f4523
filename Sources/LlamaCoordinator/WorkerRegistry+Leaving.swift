import ClusterWire

/// Graceful leaves: a leaving worker's layers go to a free standby first (it loads them
/// while the leaver serves), then the epoch turns and the leaver is released.
extension WorkerRegistry {
    func leave(_ w: WorkerRecord, now: Double) {
        guard let p = w.position else {
            w.phase = .gone
            outbox.append((w.routingID, .shutdown(Shutdown(reason: "released"))))
            return
        }
        w.phase = .leaving
        guard ranges != nil, handover == nil,
              let s = records.first(where: { $0.canTakeOver && $0.isLive && $0 !== w }) else {
            // Nobody can take the layers over: the worker goes now, its sequences pause.
            logger.warning("\(w.name) leaves and no standby is free: its layers pause until a worker takes them")
            release(w)
            uncover(p, now: now, reason: "\(w.name) left")
            return
        }
        // The standby loads the layers first; the leaver serves until the standby is ready.
        let next = epoch &+ 1
        handover = (next, p, s.name, w.name)
        s.phase = .loading
        s.position = nil
        logger.info("\(w.name) leaves: standby \(s.name) loads layers \(ranges![p].lowerBound)-\(ranges![p].upperBound - 1) first")
        var future = holders
        future[p] = s.name
        outbox.append((s.routingID, .shardAssignment(assignment(for: p, holders: future, epoch: next))))
    }

    /// Drops a prepared handover (its standby or leaver vanished, or the epoch moved on).
    func cancelHandover() {
        guard let h = handover else { return }
        handover = nil
        if let s = record(h.standby), s.position == nil, s.isLive { s.phase = .standby }
    }

    func completeHandover(now: Double) {
        guard let h = handover, let s = record(h.standby), let w = record(h.leaver) else { return }
        handover = nil
        holders[h.position] = s.name
        s.position = h.position
        s.phase = .ready
        release(w)
        logger.info("standby \(s.name) took over \(w.name)'s layers")
        epoch = h.epoch
        epochChanges.append("\(w.name) left; \(s.name) runs its layers")
        for p in holders.indices.reversed() where p != h.position {
            guard let x = holder(p), x.isLive else { continue }
            if x.phase == .ready { x.phase = .loading }
            outbox.append((x.routingID, .shardAssignment(assignment(for: p, holders: holders, epoch: epoch))))
        }
    }

    func release(_ w: WorkerRecord) {
        if let p = w.position, holders[p] == w.name { holders[p] = nil }
        w.position = nil
        w.phase = .gone
        outbox.append((w.routingID, .shutdown(Shutdown(reason: "your layers have moved; you may go"))))
    }
}
