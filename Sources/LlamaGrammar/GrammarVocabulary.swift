// MARK: - Vocabulary prepared for masking

/// A model's vocabulary prepared once for grammar masking: the bytes of every token and
/// a prefix tree (trie) of them, shared by every matcher of every sequence. Immutable.
///
/// Tokens with an empty piece and control tokens are never allowed by a grammar, except
/// `endOfText`, which is allowed exactly where the text may end.
public final class GrammarVocabulary: Sendable {
    /// The number of tokens; valid ids are `0 ..< count`.
    public let count: Int
    /// The end-of-text (EOS) token.
    public let endOfText: Int32
    /// The bytes each token adds to the text.
    let pieces: [[UInt8]]
    /// Whether a token can never be chosen under a grammar (control or empty piece).
    let excluded: [Bool]
    /// The prefix tree of all other pieces.
    let trie: TokenTrie

    /// Prepares a vocabulary.
    ///
    /// - Parameters:
    ///   - pieces: for each token id, the exact bytes it contributes to the output text
    ///     (byte-fallback tokens are their single byte; the bytes need not be valid UTF-8).
    ///   - endOfText: the end-of-text token id.
    ///   - isControl: whether an id is a control token (BOS, EOS, ...): never allowed.
    public init(pieces: [[UInt8]], endOfText: Int32, isControl: (Int32) -> Bool) {
        count = pieces.count
        self.endOfText = endOfText
        self.pieces = pieces
        excluded = pieces.indices.map { pieces[$0].isEmpty || isControl(Int32($0)) }
        trie = TokenTrie(pieces: pieces, excluded: excluded)
    }

    /// The number of nodes in the prefix tree of the pieces (for diagnostics).
    public var trieNodeCount: Int { trie.nodeCount }
}

// MARK: - Prefix tree

/// The pieces in a prefix tree laid out in depth-first preorder, so a walk is a loop over
/// the nodes that skips a pruned node's whole subtree with one jump.
struct TokenTrie: Sendable {
    struct Node: Sendable {
        /// The index after this node's subtree.
        var skip: Int32
        /// This node's tokens are `tokens[tokenStart ..< nodes[index + 1].tokenStart]`.
        var tokenStart: Int32
        /// The length of the piece up to this node (children of the root have depth 1).
        var depth: UInt16
        /// The byte on the edge into this node.
        var byte: UInt8
    }

    /// The nodes and one sentinel at the end (for the token range of the last node).
    let nodes: [Node]
    /// Token ids, grouped by the node their piece ends at.
    let tokens: [Int32]
    /// The greatest depth.
    let maxDepth: Int

    var nodeCount: Int { nodes.count - 1 }

    init(pieces: [[UInt8]], excluded: [Bool]) {
        let order = pieces.indices.filter { !excluded[$0] && pieces[$0].count <= Int(UInt16.max) }
            .sorted { pieces[$0].lexicographicallyPrecedes(pieces[$1]) }
        var nodes: [Node] = []
        var tokens: [Int32] = []
        var open: [Int] = []  // open[d - 1] is the node at depth d on the current path
        var previous: [UInt8] = []
        var maxDepth = 0
        for id in order {
            let piece = pieces[id]
            var common = 0
            while common < piece.count && common < previous.count && piece[common] == previous[common] {
                common += 1
            }
            // Nodes deeper than the common prefix are complete.
            while open.count > common {
                nodes[open.removeLast()].skip = Int32(nodes.count)
            }
            for depth in common..<piece.count {
                open.append(nodes.count)
                nodes.append(Node(skip: 0, tokenStart: Int32(tokens.count), depth: UInt16(depth + 1),
                                  byte: piece[depth]))
            }
            tokens.append(Int32(id))
            maxDepth = max(maxDepth, piece.count)
            previous = piece
        }
        for index in open { nodes[index].skip = Int32(nodes.count) }
        nodes.append(Node(skip: Int32(nodes.count + 1), tokenStart: Int32(tokens.count), depth: 0, byte: 0))
        self.nodes = nodes
        self.tokens = tokens
        self.maxDepth = maxDepth
    }
}
