import LlamaInference

// MARK: - JSON reports

extension WorkerStatus {
    /// The worker as `/health` and `/status` show it (snake_case keys, null for unknown values).
    public var json: JSONValue {
        [
            "name": .string(name),
            "state": .string(state),
            "standby": .bool(standby),
            "layers": JSONValue(layers),
            "threads": threads.map { JSONValue($0) } ?? .null,
            "address": JSONValue(address),
            "tokens_processed": JSONValue(tokensProcessed),
            "tokens_per_second": JSONValue(tokensPerSecond),
            "seconds_since_heartbeat": secondsSinceHeartbeat.map { JSONValue($0) } ?? .null,
        ]
    }
}

extension BackendCounters {
    /// The counters as `/status` shows them.
    public var json: JSONValue {
        [
            "requests_total": JSONValue(requestsTotal),
            "requests_failed": JSONValue(requestsFailed),
            "requests_active": JSONValue(requestsActive),
            "queue_length": JSONValue(queueLength),
            "prompt_tokens_total": JSONValue(promptTokensTotal),
            "prompt_tokens_cached": JSONValue(promptTokensCached),
            "generated_tokens_total": JSONValue(generatedTokensTotal),
            "tokens_per_second": JSONValue(tokensPerSecond),
            "recoveries": JSONValue(recoveries),
            "replayed_tokens": JSONValue(replayedTokens),
            "draft_tokens": JSONValue(draftedTokens),
            "draft_tokens_accepted": JSONValue(acceptedDraftTokens),
        ]
    }
}
