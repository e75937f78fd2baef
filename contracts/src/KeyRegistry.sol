// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.30;

import {IKeyRegistry} from "./IKeyRegistry.sol";

/// @title anchormq key registry
/// @notice See IKeyRegistry for the behaviour. Storage is laid out so that no state-changing function loops over
/// a group's members: adding or removing a member touches a fixed number of slots whatever the group size.
/// @dev No immutables and no constructor arguments: the runtime code is the same on every chain and address,
/// which lets tests compare a deployed fixture's code hash with the compiled one.
contract KeyRegistry is IKeyRegistry {
    /// @inheritdoc IKeyRegistry
    bytes32 public constant NODE_KEY_TYPEHASH =
        keccak256("NodeKey(bytes32 nodeId,address owner,bytes publicKey,uint32 keyVersion)");
    /// @inheritdoc IKeyRegistry
    uint256 public constant MAX_GROUPS_PER_NODE = 64;
    /// @inheritdoc IKeyRegistry
    uint256 public constant MAX_TOPIC_FILTER_LENGTH = 1024;

    bytes32 private constant DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");
    string private constant DOMAIN_NAME = "anchormq KeyRegistry";
    string private constant DOMAIN_VERSION = "1";

    /// secp256k1 field prime.
    uint256 private constant P = 0xfffffffffffffffffffffffffffffffffffffffffffffffffffffffefffffc2f;
    /// (P + 1) / 4: since P = 3 mod 4, a^((P+1)/4) is a square root of a whenever one exists.
    uint256 private constant SQRT_EXPONENT =
        0x3fffffffffffffffffffffffffffffffffffffffffffffffffffffffbfffff0c;
    /// secp256k1 group order / 2: larger s values are the malleable twins of valid signatures.
    uint256 private constant HALF_N = 0x7fffffffffffffffffffffffffffffff5d576e7357a4501ddfe92f46681b20a0;

    /// One slot: 20 + 4 + 1 + 1 + 4 bytes. The key's x coordinate lives in `_keyX`.
    struct NodeRecord {
        address owner;
        uint32 keyVersion;
        NodeStatus status;
        uint8 keyPrefix;
        uint32 groupCount;
    }

    /// One slot: 20 + 8 + 4 bytes. A group exists iff its admin is non-zero.
    struct GroupRecord {
        address admin;
        uint64 epoch;
        uint32 memberCount;
    }

    mapping(bytes32 nodeId => NodeRecord) private _nodes;
    mapping(bytes32 nodeId => bytes32) private _keyX;
    mapping(bytes32 groupId => GroupRecord) private _groups;
    mapping(bytes32 groupId => string) private _topicFilters;
    /// Members by position 0..memberCount-1 (the length lives in GroupRecord, saving a slot per add).
    mapping(bytes32 groupId => mapping(uint256 position => bytes32 nodeId)) private _memberAt;
    /// position + 1 of a member, 0 when not a member: O(1) membership checks and swap-and-pop removal.
    mapping(bytes32 groupId => mapping(bytes32 nodeId => uint256)) private _positionPlusOne;

    // ------------------------------------------------------------------ nodes

    /// @inheritdoc IKeyRegistry
    function registerNode(bytes32 nodeId, bytes calldata publicKey, bytes calldata signature) external {
        if (nodeId == bytes32(0)) revert ZeroId();
        if (_nodes[nodeId].status != NodeStatus.None) revert NodeAlreadyRegistered(nodeId);
        (uint8 prefix, bytes32 x) = _verifyNodeKey(nodeId, msg.sender, publicKey, 1, signature);

        _nodes[nodeId] = NodeRecord({
            owner: msg.sender, keyVersion: 1, status: NodeStatus.Active, keyPrefix: prefix, groupCount: 0
        });
        _keyX[nodeId] = x;
        emit NodeRegistered(nodeId, msg.sender, publicKey, 1);
    }

    /// @inheritdoc IKeyRegistry
    function rotateKey(
        bytes32 nodeId,
        bytes calldata newPublicKey,
        bytes calldata signature,
        bytes32[] calldata groups
    ) external {
        NodeRecord memory node = _ownedActiveNode(nodeId);
        _checkGroupListLength(nodeId, node.groupCount, groups);
        uint32 keyVersion = node.keyVersion + 1;
        (uint8 prefix, bytes32 x) = _verifyNodeKey(nodeId, msg.sender, newPublicKey, keyVersion, signature);
        if (prefix == node.keyPrefix && x == _keyX[nodeId]) revert PublicKeyUnchanged(nodeId);

        node.keyVersion = keyVersion;
        node.keyPrefix = prefix;
        _nodes[nodeId] = node;
        _keyX[nodeId] = x;
        emit NodeKeyRotated(nodeId, newPublicKey, keyVersion, msg.sender);

        for (uint256 i; i < groups.length; ++i) {
            bytes32 groupId = _checkedGroupListEntry(nodeId, groups, i);
            GroupRecord storage group = _groups[groupId];
            uint64 epoch = group.epoch + 1;
            group.epoch = epoch;
            emit GroupEpochBumped(groupId, nodeId, epoch, keyVersion);
        }
    }

    /// @inheritdoc IKeyRegistry
    function revokeNode(bytes32 nodeId, bytes32[] calldata groups) external {
        NodeRecord memory node = _ownedActiveNode(nodeId);
        _checkGroupListLength(nodeId, node.groupCount, groups);

        node.status = NodeStatus.Revoked;
        node.groupCount = 0;
        _nodes[nodeId] = node;
        emit NodeRevoked(nodeId, msg.sender);

        for (uint256 i; i < groups.length; ++i) {
            bytes32 groupId = _checkedGroupListEntry(nodeId, groups, i);
            uint64 epoch = _removeFromGroup(groupId, nodeId, _positionPlusOne[groupId][nodeId]);
            emit MemberRemoved(groupId, nodeId, epoch, msg.sender);
        }
    }

    /// @inheritdoc IKeyRegistry
    function transferNodeOwnership(bytes32 nodeId, address newOwner) external {
        NodeRecord memory node = _ownedActiveNode(nodeId);
        if (newOwner == address(0)) revert ZeroAddress();
        _nodes[nodeId].owner = newOwner;
        emit NodeOwnershipTransferred(nodeId, node.owner, newOwner);
    }

    // ------------------------------------------------------------------ groups

    /// @inheritdoc IKeyRegistry
    function createGroup(bytes32 groupId, string calldata topicFilter) external {
        if (groupId == bytes32(0)) revert ZeroId();
        if (_groups[groupId].admin != address(0)) revert GroupAlreadyExists(groupId);
        uint256 length = bytes(topicFilter).length;
        if (length > MAX_TOPIC_FILTER_LENGTH) revert TopicFilterTooLong(length, MAX_TOPIC_FILTER_LENGTH);

        _groups[groupId] = GroupRecord({admin: msg.sender, epoch: 0, memberCount: 0});
        if (length != 0) _topicFilters[groupId] = topicFilter;
        emit GroupCreated(groupId, msg.sender, topicFilter);
    }

    /// @inheritdoc IKeyRegistry
    function transferGroupAdmin(bytes32 groupId, address newAdmin) external {
        _adminGroup(groupId);
        if (newAdmin == address(0)) revert ZeroAddress();
        _groups[groupId].admin = newAdmin;
        emit GroupAdminTransferred(groupId, msg.sender, newAdmin);
    }

    /// @inheritdoc IKeyRegistry
    function addMember(bytes32 groupId, bytes32 nodeId) external {
        GroupRecord memory group = _adminGroup(groupId);
        NodeRecord memory node = _nodes[nodeId];
        if (node.status == NodeStatus.None) revert NodeNotFound(nodeId);
        if (node.status == NodeStatus.Revoked) revert NodeIsRevoked(nodeId);
        if (_positionPlusOne[groupId][nodeId] != 0) revert AlreadyMember(groupId, nodeId);
        if (node.groupCount >= MAX_GROUPS_PER_NODE) {
            revert NodeGroupLimitReached(nodeId, MAX_GROUPS_PER_NODE);
        }

        uint32 count = group.memberCount;
        _memberAt[groupId][count] = nodeId;
        _positionPlusOne[groupId][nodeId] = uint256(count) + 1;
        // uint32/uint64 counters cannot realistically overflow: every increment is a paid transaction.
        unchecked {
            group.memberCount = count + 1;
            group.epoch += 1;
            _nodes[nodeId].groupCount = node.groupCount + 1;
        }
        _groups[groupId] = group;
        emit MemberAdded(groupId, nodeId, group.epoch, msg.sender);
    }

    /// @inheritdoc IKeyRegistry
    function removeMember(bytes32 groupId, bytes32 nodeId) external {
        _adminGroup(groupId);
        _removeMemberAndCount(groupId, nodeId);
    }

    /// @inheritdoc IKeyRegistry
    function leaveGroup(bytes32 groupId, bytes32 nodeId) external {
        if (_groups[groupId].admin == address(0)) revert GroupNotFound(groupId);
        NodeRecord memory node = _nodes[nodeId];
        if (node.status == NodeStatus.None) revert NodeNotFound(nodeId);
        if (node.owner != msg.sender) revert NotNodeOwner(nodeId, msg.sender);
        _removeMemberAndCount(groupId, nodeId);
    }

    // ------------------------------------------------------------------ queries

    /// @inheritdoc IKeyRegistry
    function getNode(bytes32 nodeId) external view returns (Node memory) {
        NodeRecord memory node = _nodes[nodeId];
        if (node.status == NodeStatus.None) revert NodeNotFound(nodeId);
        return Node({
            owner: node.owner,
            keyVersion: node.keyVersion,
            status: node.status,
            groupCount: node.groupCount,
            publicKey: abi.encodePacked(node.keyPrefix, _keyX[nodeId])
        });
    }

    /// @inheritdoc IKeyRegistry
    function nodeGroupCount(bytes32 nodeId) external view returns (uint256) {
        NodeRecord memory node = _nodes[nodeId];
        if (node.status == NodeStatus.None) revert NodeNotFound(nodeId);
        return node.groupCount;
    }

    /// @inheritdoc IKeyRegistry
    function getGroup(bytes32 groupId) external view returns (Group memory) {
        GroupRecord memory group = _groups[groupId];
        if (group.admin == address(0)) revert GroupNotFound(groupId);
        return Group({
            admin: group.admin,
            epoch: group.epoch,
            memberCount: group.memberCount,
            topicFilter: _topicFilters[groupId]
        });
    }

    /// @inheritdoc IKeyRegistry
    function isMember(bytes32 groupId, bytes32 nodeId) external view returns (bool) {
        return _positionPlusOne[groupId][nodeId] != 0;
    }

    /// @inheritdoc IKeyRegistry
    function groupMembers(bytes32 groupId, uint256 offset, uint256 limit)
        external
        view
        returns (bytes32[] memory members)
    {
        GroupRecord memory group = _groups[groupId];
        if (group.admin == address(0)) revert GroupNotFound(groupId);
        uint256 count = group.memberCount;
        if (offset >= count) return new bytes32[](0);
        if (limit > count - offset) limit = count - offset;
        members = new bytes32[](limit);
        for (uint256 i; i < limit; ++i) {
            members[i] = _memberAt[groupId][offset + i];
        }
    }

    /// @inheritdoc IKeyRegistry
    function nodeKeyDigest(bytes32 nodeId, address owner, bytes calldata publicKey, uint32 keyVersion)
        external
        view
        returns (bytes32)
    {
        return _nodeKeyDigest(nodeId, owner, publicKey, keyVersion);
    }

    /// @inheritdoc IKeyRegistry
    function domainSeparator() public view returns (bytes32) {
        // Computed on every call rather than cached in an immutable: keeps the runtime code address-free.
        return keccak256(
            abi.encode(
                DOMAIN_TYPEHASH,
                keccak256(bytes(DOMAIN_NAME)),
                keccak256(bytes(DOMAIN_VERSION)),
                block.chainid,
                address(this)
            )
        );
    }

    /// @inheritdoc IKeyRegistry
    function eip712Domain()
        external
        view
        returns (
            bytes1 fields,
            string memory name,
            string memory version,
            uint256 chainId,
            address verifyingContract,
            bytes32 salt,
            uint256[] memory extensions
        )
    {
        return (
            hex"0f", DOMAIN_NAME, DOMAIN_VERSION, block.chainid, address(this), bytes32(0), new uint256[](0)
        );
    }

    // ------------------------------------------------------------------ internals

    function _ownedActiveNode(bytes32 nodeId) private view returns (NodeRecord memory node) {
        node = _nodes[nodeId];
        if (node.status == NodeStatus.None) revert NodeNotFound(nodeId);
        if (node.owner != msg.sender) revert NotNodeOwner(nodeId, msg.sender);
        if (node.status == NodeStatus.Revoked) revert NodeIsRevoked(nodeId);
    }

    function _adminGroup(bytes32 groupId) private view returns (GroupRecord memory group) {
        group = _groups[groupId];
        if (group.admin == address(0)) revert GroupNotFound(groupId);
        if (group.admin != msg.sender) revert NotGroupAdmin(groupId, msg.sender);
    }

    /// Removes a member found by the caller's checks and updates the node's group count.
    function _removeMemberAndCount(bytes32 groupId, bytes32 nodeId) private {
        uint256 positionPlusOne = _positionPlusOne[groupId][nodeId];
        if (positionPlusOne == 0) revert NotMember(groupId, nodeId);
        uint64 epoch = _removeFromGroup(groupId, nodeId, positionPlusOne);
        unchecked {
            // A member's node has groupCount >= 1.
            _nodes[nodeId].groupCount -= 1;
        }
        emit MemberRemoved(groupId, nodeId, epoch, msg.sender);
    }

    /// Swap-and-pop removal; returns the group's new epoch. Does not touch the node record.
    function _removeFromGroup(bytes32 groupId, bytes32 nodeId, uint256 positionPlusOne)
        private
        returns (uint64 epoch)
    {
        GroupRecord memory group = _groups[groupId];
        uint256 last;
        unchecked {
            // The node is a member, so memberCount >= 1 and positionPlusOne >= 1.
            last = uint256(group.memberCount) - 1;
            uint256 position = positionPlusOne - 1;
            if (position != last) {
                bytes32 moved = _memberAt[groupId][last];
                _memberAt[groupId][position] = moved;
                _positionPlusOne[groupId][moved] = positionPlusOne;
            }
            epoch = group.epoch + 1;
        }
        delete _memberAt[groupId][last];
        delete _positionPlusOne[groupId][nodeId];
        // casting to 'uint32' is safe because last < memberCount, itself a uint32.
        // forge-lint: disable-next-line(unsafe-typecast)
        group.memberCount = uint32(last);
        group.epoch = epoch;
        _groups[groupId] = group;
    }

    function _checkGroupListLength(bytes32 nodeId, uint256 groupCount, bytes32[] calldata groups)
        private
        pure
    {
        if (groups.length != groupCount) {
            revert GroupListLengthMismatch(nodeId, groupCount, groups.length);
        }
    }

    /// Entry `i` of a group list: strictly above entry i-1 (so no duplicates) and a group holding the node.
    /// With the length equal to groupCount, this proves the list is exactly the node's groups.
    function _checkedGroupListEntry(bytes32 nodeId, bytes32[] calldata groups, uint256 i)
        private
        view
        returns (bytes32 groupId)
    {
        groupId = groups[i];
        if (i != 0 && groupId <= groups[i - 1]) revert GroupListNotAscending(i);
        if (_positionPlusOne[groupId][nodeId] == 0) revert NotMember(groupId, nodeId);
    }

    function _nodeKeyDigest(bytes32 nodeId, address owner, bytes calldata publicKey, uint32 keyVersion)
        private
        view
        returns (bytes32)
    {
        bytes32 structHash =
            keccak256(abi.encode(NODE_KEY_TYPEHASH, nodeId, owner, keccak256(publicKey), keyVersion));
        return keccak256(abi.encodePacked(hex"1901", domainSeparator(), structHash));
    }

    /// Validates the key and checks that `signature` proves possession of it for (nodeId, owner, keyVersion).
    function _verifyNodeKey(
        bytes32 nodeId,
        address owner,
        bytes calldata publicKey,
        uint32 keyVersion,
        bytes calldata signature
    ) private view returns (uint8 prefix, bytes32 x) {
        address keyAddress;
        (prefix, x, keyAddress) = _decompress(publicKey);

        if (signature.length != 65) revert InvalidSignatureLength(signature.length);
        bytes32 r = bytes32(signature[0:32]);
        bytes32 s = bytes32(signature[32:64]);
        uint8 v = uint8(signature[64]);
        if (v < 2) v += 27; // accept the raw recovery id (0/1) as well as 27/28
        if (v != 27 && v != 28) revert InvalidSignatureV(uint8(signature[64]));
        if (uint256(s) > HALF_N) revert SignatureMalleable(s);

        address recovered = ecrecover(_nodeKeyDigest(nodeId, owner, publicKey, keyVersion), v, r, s);
        if (recovered != keyAddress) revert InvalidSignature(keyAddress, recovered);
    }

    /// Parses a compressed key and returns its prefix, x and Ethereum address (keccak256(x || y)[12:]).
    function _decompress(bytes calldata publicKey)
        private
        view
        returns (uint8 prefix, bytes32 x, address keyAddress)
    {
        if (publicKey.length != 33) revert InvalidPublicKeyLength(publicKey.length);
        prefix = uint8(publicKey[0]);
        if (prefix != 2 && prefix != 3) revert InvalidPublicKeyPrefix(prefix);
        x = bytes32(publicKey[1:33]);
        uint256 xn = uint256(x);
        if (xn >= P) revert PublicKeyXOutOfRange(x);

        uint256 rhs = addmod(mulmod(mulmod(xn, xn, P), xn, P), 7, P);
        uint256 y = _modexp(rhs, SQRT_EXPONENT, P);
        if (mulmod(y, y, P) != rhs) revert PublicKeyNotOnCurve(x);
        // y != 0 on secp256k1 (no point of order 2), so P - y stays in range.
        if (y & 1 != prefix & 1) y = P - y;
        keyAddress = address(uint160(uint256(keccak256(abi.encodePacked(x, y)))));
    }

    /// base^exponent mod modulus through the modexp precompile (address 0x05).
    function _modexp(uint256 base, uint256 exponent, uint256 modulus) private view returns (uint256 result) {
        assembly ("memory-safe") {
            let input := mload(0x40)
            mstore(input, 0x20)
            mstore(add(input, 0x20), 0x20)
            mstore(add(input, 0x40), 0x20)
            mstore(add(input, 0x60), base)
            mstore(add(input, 0x80), exponent)
            mstore(add(input, 0xa0), modulus)
            if iszero(staticcall(gas(), 0x05, input, 0xc0, input, 0x20)) { revert(0, 0) }
            result := mload(input)
        }
    }
}
